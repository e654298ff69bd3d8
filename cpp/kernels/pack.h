// Bit packing of small integer codes into 8- or 32-bit words.
//
// Each row of `cols` codes becomes one little-endian bit stream: code j occupies
// bits [j*bits, (j+1)*bits) of the row, so an INT4 row packed into bytes has
// code 2i in the low nibble of byte i, and the same row packed into int32 words
// has code 8i+t at bits 4t of word i (the GPTQ / compressed-tensors order).
// 3-bit codes cross word boundaries, exactly as GPTQ packs them.
#pragma once

#include <cstdint>

namespace quantcore::kernels {

// Codes per row must fill whole words: cols * bits % word_bits == 0.
bool pack_shape_ok(int64_t cols, int bits, int word_bits);

// Number of words per packed row (cols * bits / word_bits).
int64_t packed_words(int64_t cols, int bits, int word_bits);

// Index of the first code outside [lo, hi], or -1 when all are in range.
// `codes` are read as int8 when is_signed, else as uint8.
int64_t find_out_of_range(const uint8_t* codes, int64_t n, bool is_signed, int bits);

// Packs rows [row_begin, row_end) of a rows x cols code matrix. Only the low
// `bits` bits of each code are stored (two's complement for signed codes).
// `out` points at the start of the packed matrix (uint8 or uint32 words).
void pack_rows(const uint8_t* codes, int64_t cols, int bits, int word_bits, void* out,
               int64_t row_begin, int64_t row_end);

// Inverse of pack_rows; sign_extend turns the stored bits back into int8.
void unpack_rows(const void* packed, int64_t cols, int bits, int word_bits, bool sign_extend,
                 uint8_t* codes, int64_t row_begin, int64_t row_end);

}  // namespace quantcore::kernels
