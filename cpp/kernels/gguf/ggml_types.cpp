#include "ggml_types.h"

namespace quantcore::kernels::gguf {

TypeSize type_size(uint32_t type_id) {
  switch (static_cast<GgmlType>(type_id)) {
    case GgmlType::F32: return {1, 4};
    case GgmlType::F16: return {1, 2};
    case GgmlType::BF16: return {1, 2};
    case GgmlType::Q4_0: return {kLegacyBlock, int(sizeof(BlockQ4_0))};
    case GgmlType::Q4_1: return {kLegacyBlock, int(sizeof(BlockQ4_1))};
    case GgmlType::Q5_0: return {kLegacyBlock, int(sizeof(BlockQ5_0))};
    case GgmlType::Q5_1: return {kLegacyBlock, int(sizeof(BlockQ5_1))};
    case GgmlType::Q8_0: return {kLegacyBlock, int(sizeof(BlockQ8_0))};
    case GgmlType::Q2_K: return {kSuperBlock, int(sizeof(BlockQ2_K))};
    case GgmlType::Q3_K: return {kSuperBlock, int(sizeof(BlockQ3_K))};
    case GgmlType::Q4_K: return {kSuperBlock, int(sizeof(BlockQ4_K))};
    case GgmlType::Q5_K: return {kSuperBlock, int(sizeof(BlockQ5_K))};
    case GgmlType::Q6_K: return {kSuperBlock, int(sizeof(BlockQ6_K))};
  }
  return {0, 0};
}

}  // namespace quantcore::kernels::gguf
