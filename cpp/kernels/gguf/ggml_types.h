// ggml's quantized tensor types as GGUF files store them: the type ids, the
// element and byte size of one block, and the block structs themselves (byte
// for byte as ggml-common.h lays them out; the static_asserts pin the sizes).
// Half-precision fields are raw IEEE binary16 bits.
#pragma once

#include <cstdint>

namespace quantcore::kernels::gguf {

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
};

constexpr int kLegacyBlock = 32;  // Q4_0 .. Q8_0
constexpr int kSuperBlock = 256;  // the K-quants (QK_K)

struct TypeSize {
  int block_elems;  // elements per block (1 for F32/F16/BF16)
  int block_bytes;  // bytes per block
};

// Sizes of a supported type; {0, 0} for any other id.
TypeSize type_size(uint32_t type_id);

inline bool is_supported(uint32_t type_id) { return type_size(type_id).block_elems > 0; }

#pragma pack(push, 1)
struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[16]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ8_0 { uint16_t d; int8_t qs[32]; };
// 16 sub-blocks of 16: 4-bit scale (low nibble) and 4-bit min (high nibble) each.
struct BlockQ2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; };
// 16 sub-blocks of 16: 6-bit scales packed in 12 bytes; hmask holds each code's third bit.
struct BlockQ3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
// 8 sub-blocks of 32: 6-bit scales and mins packed in 12 bytes.
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
// 16 sub-blocks of 16: int8 scales; 6-bit codes as 4 low bits (ql) and 2 high bits (qh).
struct BlockQ6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
#pragma pack(pop)

static_assert(sizeof(BlockQ4_0) == 18, "block_q4_0");
static_assert(sizeof(BlockQ4_1) == 20, "block_q4_1");
static_assert(sizeof(BlockQ5_0) == 22, "block_q5_0");
static_assert(sizeof(BlockQ5_1) == 24, "block_q5_1");
static_assert(sizeof(BlockQ8_0) == 34, "block_q8_0");
static_assert(sizeof(BlockQ2_K) == 84, "block_q2_K");
static_assert(sizeof(BlockQ3_K) == 110, "block_q3_K");
static_assert(sizeof(BlockQ4_K) == 144, "block_q4_K");
static_assert(sizeof(BlockQ5_K) == 176, "block_q5_K");
static_assert(sizeof(BlockQ6_K) == 210, "block_q6_K");

// Scale and min of sub-block j (0..7) from the 12 packed bytes of Q4_K/Q5_K.
inline void unpack_scale_min_k4(const uint8_t* packed, int j, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = packed[j] & 63;
    *min = packed[j + 4] & 63;
  } else {
    *scale = uint8_t((packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4));
    *min = uint8_t((packed[j + 4] >> 4) | ((packed[j] >> 6) << 4));
  }
}

// Signed 6-bit scale of sub-block j (0..15) from Q3_K's 12 packed bytes (-32..31).
inline int unpack_scale_q3(const uint8_t* packed, int j) {
  const int low = j < 8 ? (packed[j] & 0xF) : (packed[j - 8] >> 4);
  const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

}  // namespace quantcore::kernels::gguf
