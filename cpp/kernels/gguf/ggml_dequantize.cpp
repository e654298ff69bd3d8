#include "ggml_dequantize.h"

#include <cstring>

#include "../float_convert.h"
#include "../status.h"
#include "ggml_types.h"

namespace quantcore::kernels::gguf {

namespace {

float half(uint16_t h) { return f16_to_f32(h); }

// Bit helpers shared by the K-quant layouts (element e of a 256 super-block).
// Two-bit planes (Q2_K, Q3_K codes): each 32 bytes hold 128 elements, four per byte.
int two_bits(const uint8_t* qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }
// One-bit planes (Q3_K hmask, Q5_K qh): element e in byte e % 32, bit e / 32.
int one_bit(const uint8_t* plane, int e) { return (plane[e % 32] >> (e / 32)) & 1; }
// Four-bit planes of Q4_K/Q5_K: chunks of 64 elements in 32 bytes, low nibbles first.
int four_bits(const uint8_t* qs, int e) { return (qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 0xF; }

void legacy_4bit(const uint8_t* qs, int* q) {  // element i low nibble, i + 16 high nibble
  for (int i = 0; i < 16; ++i) {
    q[i] = qs[i] & 0xF;
    q[i + 16] = qs[i] >> 4;
  }
}

void add_fifth_bit(const uint8_t* qh_bytes, int* q) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  for (int i = 0; i < 32; ++i) q[i] |= int((qh >> i) & 1) << 4;
}

}  // namespace

void dequantize_row(uint32_t type_id, const uint8_t* src, float* dst, int64_t n) {
  const TypeSize ts = type_size(type_id);
  QC_REQUIRE(ts.block_elems > 0, "gguf: unsupported ggml type " + std::to_string(type_id));
  QC_REQUIRE(n >= 0 && n % ts.block_elems == 0,
             "gguf: row length " + std::to_string(n) + " is not a multiple of the block size");
  const int64_t blocks = n / ts.block_elems;
  int q[kSuperBlock];
  switch (static_cast<GgmlType>(type_id)) {
    case GgmlType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case GgmlType::Q4_0:
      for (int64_t b = 0; b < blocks; ++b, dst += 32) {
        BlockQ4_0 blk;
        std::memcpy(&blk, src + b * sizeof(blk), sizeof(blk));
        legacy_4bit(blk.qs, q);
        const float d = half(blk.d);
        for (int i = 0; i < 32; ++i) dst[i] = d * float(q[i] - 8);
      }
      return;
    case GgmlType::Q4_1:
      for (int64_t b = 0; b < blocks; ++b, dst += 32) {
        BlockQ4_1 blk;
        std::memcpy(&blk, src + b * sizeof(blk), sizeof(blk));
        legacy_4bit(blk.qs, q);
        const float d = half(blk.d), m = half(blk.m);
        for (int i = 0; i < 32; ++i) dst[i] = d * float(q[i]) + m;
      }
      return;
    case GgmlType::Q5_0:
      for (int64_t b = 0; b < blocks; ++b, dst += 32) {
        BlockQ5_0 blk;
        std::memcpy(&blk, src + b * sizeof(blk), sizeof(blk));
        legacy_4bit(blk.qs, q);
        add_fifth_bit(blk.qh, q);
        const float d = half(blk.d);
        for (int i = 0; i < 32; ++i) dst[i] = d * float(q[i] - 16);
      }
      return;
    case GgmlType::Q5_1:
      for (int64_t b = 0; b < blocks; ++b, dst += 32) {
        BlockQ5_1 blk;
        std::memcpy(&blk, src + b * sizeof(blk), sizeof(blk));
        legacy_4bit(blk.qs, q);
        add_fifth_bit(blk.qh, q);
        const float d = half(blk.d), m = half(blk.m);
        for (int i = 0; i < 32; ++i) dst[i] = d * float(q[i]) + m;
      }
      return;
    case GgmlType::Q8_0:
      for (int64_t b = 0; b < blocks; ++b, dst += 32) {
        BlockQ8_0 blk;
        std::memcpy(&blk, src + b * sizeof(blk), sizeof(blk));
        const float d = half(blk.d);
        for (int i = 0; i < 32; ++i) dst[i] = d * float(blk.qs[i]);
      }
      return;
    case GgmlType::Q2_K:
      for (int64_t b = 0; b < blocks; ++b, dst += kSuperBlock) {
        BlockQ2_K blk;
        std::memcpy(&blk, src + b * sizeof(blk), sizeof(blk));
        const float d = half(blk.d), dmin = half(blk.dmin);
        for (int e = 0; e < kSuperBlock; ++e) {
          const uint8_t s = blk.scales[e / 16];
          dst[e] = d * float(s & 0xF) * float(two_bits(blk.qs, e)) - dmin * float(s >> 4);
        }
      }
      return;
    case GgmlType::Q3_K:
      for (int64_t b = 0; b < blocks; ++b, dst += kSuperBlock) {
        BlockQ3_K blk;
        std::memcpy(&blk, src + b * sizeof(blk), sizeof(blk));
        const float d = half(blk.d);
        for (int e = 0; e < kSuperBlock; ++e) {
          // A set hmask bit means the code is not shifted down by 4.
          const int code = two_bits(blk.qs, e) - (one_bit(blk.hmask, e) ? 0 : 4);
          dst[e] = d * float(unpack_scale_q3(blk.scales, e / 16)) * float(code);
        }
      }
      return;
    case GgmlType::Q4_K:
      for (int64_t b = 0; b < blocks; ++b, dst += kSuperBlock) {
        BlockQ4_K blk;
        std::memcpy(&blk, src + b * sizeof(blk), sizeof(blk));
        const float d = half(blk.d), dmin = half(blk.dmin);
        for (int e = 0; e < kSuperBlock; ++e) {
          uint8_t sc, m;
          unpack_scale_min_k4(blk.scales, e / 32, &sc, &m);
          dst[e] = d * float(sc) * float(four_bits(blk.qs, e)) - dmin * float(m);
        }
      }
      return;
    case GgmlType::Q5_K:
      for (int64_t b = 0; b < blocks; ++b, dst += kSuperBlock) {
        BlockQ5_K blk;
        std::memcpy(&blk, src + b * sizeof(blk), sizeof(blk));
        const float d = half(blk.d), dmin = half(blk.dmin);
        for (int e = 0; e < kSuperBlock; ++e) {
          uint8_t sc, m;
          unpack_scale_min_k4(blk.scales, e / 32, &sc, &m);
          const int code = four_bits(blk.qs, e) | (one_bit(blk.qh, e) << 4);
          dst[e] = d * float(sc) * float(code) - dmin * float(m);
        }
      }
      return;
    case GgmlType::Q6_K:
      for (int64_t b = 0; b < blocks; ++b, dst += kSuperBlock) {
        BlockQ6_K blk;
        std::memcpy(&blk, src + b * sizeof(blk), sizeof(blk));
        const float d = half(blk.d);
        for (int e = 0; e < kSuperBlock; ++e) {
          const int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
          const int lo = (blk.ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0xF;
          const int hi = (blk.qh[32 * h + l] >> (2 * k)) & 3;
          dst[e] = d * float(blk.scales[e / 16]) * float((lo | (hi << 4)) - 32);
        }
      }
      return;
  }
}

}  // namespace quantcore::kernels::gguf
