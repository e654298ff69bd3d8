#include "pack.h"

#include <cstring>

namespace quantcore::kernels {

bool pack_shape_ok(int64_t cols, int bits, int word_bits) {
  return cols >= 0 && bits >= 1 && bits <= 8 && (word_bits == 8 || word_bits == 32) &&
         (cols * bits) % word_bits == 0;
}

int64_t packed_words(int64_t cols, int bits, int word_bits) { return cols * bits / word_bits; }

int64_t find_out_of_range(const uint8_t* codes, int64_t n, bool is_signed, int bits) {
  if (is_signed) {
    const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
    const int8_t* s = reinterpret_cast<const int8_t*>(codes);
    for (int64_t i = 0; i < n; ++i)
      if (s[i] < lo || s[i] > hi) return i;
  } else {
    const int hi = (1 << bits) - 1;
    for (int64_t i = 0; i < n; ++i)
      if (codes[i] > hi) return i;
  }
  return -1;
}

namespace {

// Bytes are the natural unit: a row's bit stream is the same whether it is
// stored as bytes or as little-endian uint32 words, so both word sizes share
// this byte-level code on little-endian hosts.
void pack_row_bytes(const uint8_t* codes, int64_t cols, int bits, uint8_t* out) {
  const uint32_t mask = (1u << bits) - 1u;
  if (bits == 8) {
    std::memcpy(out, codes, size_t(cols));
    return;
  }
  if (bits == 4) {
    for (int64_t i = 0; i < cols / 2; ++i)
      out[i] = uint8_t((codes[2 * i] & 0xf) | ((codes[2 * i + 1] & 0xf) << 4));
    return;
  }
  const int64_t nbytes = cols * bits / 8;
  std::memset(out, 0, size_t(nbytes));
  int64_t bitpos = 0;
  for (int64_t j = 0; j < cols; ++j, bitpos += bits) {
    uint32_t v = codes[j] & mask;
    int64_t byte = bitpos >> 3;
    int shift = int(bitpos & 7);
    out[byte] |= uint8_t(v << shift);
    if (shift + bits > 8) out[byte + 1] |= uint8_t(v >> (8 - shift));
  }
}

void unpack_row_bytes(const uint8_t* in, int64_t cols, int bits, bool sign_extend,
                      uint8_t* codes) {
  const uint32_t mask = (1u << bits) - 1u;
  const uint32_t sign_bit = 1u << (bits - 1);
  auto finish = [&](uint32_t v) -> uint8_t {
    if (sign_extend && (v & sign_bit)) v |= ~mask;
    return uint8_t(v);
  };
  if (bits == 8) {
    std::memcpy(codes, in, size_t(cols));
    return;
  }
  if (bits == 4) {
    for (int64_t i = 0; i < cols / 2; ++i) {
      codes[2 * i] = finish(in[i] & 0xf);
      codes[2 * i + 1] = finish(in[i] >> 4);
    }
    return;
  }
  int64_t bitpos = 0;
  for (int64_t j = 0; j < cols; ++j, bitpos += bits) {
    int64_t byte = bitpos >> 3;
    int shift = int(bitpos & 7);
    uint32_t v = uint32_t(in[byte]) >> shift;
    if (shift + bits > 8) v |= uint32_t(in[byte + 1]) << (8 - shift);
    codes[j] = finish(v & mask);
  }
}

static_assert(sizeof(uint32_t) == 4, "packed words are 32-bit");

}  // namespace

void pack_rows(const uint8_t* codes, int64_t cols, int bits, int word_bits, void* out,
               int64_t row_begin, int64_t row_end) {
  const int64_t row_bytes = cols * bits / 8;
  (void)word_bits;  // identical byte stream for 8- and 32-bit words (little-endian)
  uint8_t* dst = static_cast<uint8_t*>(out);
  for (int64_t r = row_begin; r < row_end; ++r)
    pack_row_bytes(codes + r * cols, cols, bits, dst + r * row_bytes);
}

void unpack_rows(const void* packed, int64_t cols, int bits, int word_bits, bool sign_extend,
                 uint8_t* codes, int64_t row_begin, int64_t row_end) {
  const int64_t row_bytes = cols * bits / 8;
  (void)word_bits;
  const uint8_t* src = static_cast<const uint8_t*>(packed);
  for (int64_t r = row_begin; r < row_end; ++r)
    unpack_row_bytes(src + r * row_bytes, cols, bits, sign_extend, codes + r * cols);
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "quantcore's packed layouts assume a little-endian host"
#endif

}  // namespace quantcore::kernels
