#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "pack.h"

using namespace quantcore::kernels;

namespace {

std::vector<uint8_t> random_codes(int64_t n, int bits, bool is_signed, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(static_cast<size_t>(n));
  const int lo = is_signed ? -(1 << (bits - 1)) : 0;
  const int hi = is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  std::uniform_int_distribution<int> d(lo, hi);
  for (auto& c : v) c = uint8_t(int8_t(d(rng)));
  // Edge values first so every run sees them.
  if (n >= 2) {
    v[0] = uint8_t(int8_t(lo));
    v[1] = uint8_t(int8_t(hi));
  }
  return v;
}

}  // namespace

TEST_CASE("pack/unpack round trip is bit-exact for every width, word and sign") {
  for (int bits : {2, 3, 4, 5, 6, 7, 8}) {
    for (int word : {8, 32}) {
      for (bool is_signed : {false, true}) {
        const int64_t rows = 5, cols = 96;  // 96 fills whole words for every width
        REQUIRE(pack_shape_ok(cols, bits, word));
        auto codes = random_codes(rows * cols, bits, is_signed, uint32_t(bits * 100 + word));
        std::vector<uint8_t> packed(size_t(rows * packed_words(cols, bits, word) * word / 8));
        pack_rows(codes.data(), cols, bits, word, packed.data(), 0, rows);
        std::vector<uint8_t> back(codes.size());
        unpack_rows(packed.data(), cols, bits, word, is_signed, back.data(), 0, rows);
        INFO("bits=" << bits << " word=" << word << " signed=" << is_signed);
        REQUIRE(back == codes);
      }
    }
  }
}

TEST_CASE("packed layout: code j at bit bits*j of the row stream") {
  SECTION("int4 two per byte, low nibble first") {
    std::vector<uint8_t> codes = {1, 2, 15, 0, 7, 8, 3, 12};
    std::vector<uint8_t> out(4);
    pack_rows(codes.data(), 8, 4, 8, out.data(), 0, 1);
    REQUIRE(out == std::vector<uint8_t>{0x21, 0x0f, 0x87, 0xc3});
    uint32_t word;
    pack_rows(codes.data(), 8, 4, 32, &word, 0, 1);
    REQUIRE(word == 0xc3870f21u);  // GPTQ order: value t at bits 4t
  }
  SECTION("int3 crosses word boundaries like GPTQ") {
    std::vector<uint8_t> codes(32);
    for (int j = 0; j < 32; ++j) codes[j] = uint8_t(j % 8);
    uint32_t words[3];
    pack_rows(codes.data(), 32, 3, 32, words, 0, 1);
    auto stream_bit = [&](int b) { return (words[b / 32] >> (b % 32)) & 1u; };
    for (int j = 0; j < 32; ++j) {
      const uint32_t v = stream_bit(3 * j) | (stream_bit(3 * j + 1) << 1) | (stream_bit(3 * j + 2) << 2);
      REQUIRE(v == codes[j]);
    }
  }
  SECTION("int2 sixteen per word") {
    std::vector<uint8_t> codes(16, 0);
    codes[15] = 3;
    uint32_t word;
    pack_rows(codes.data(), 16, 2, 32, &word, 0, 1);
    REQUIRE(word == 0xc0000000u);
  }
}

TEST_CASE("signed codes sign-extend on unpack") {
  std::vector<uint8_t> codes = {uint8_t(int8_t(-8)), 7, uint8_t(int8_t(-1)), 0};
  std::vector<uint8_t> packed(2), back(4);
  pack_rows(codes.data(), 4, 4, 8, packed.data(), 0, 1);
  unpack_rows(packed.data(), 4, 4, 8, true, back.data(), 0, 1);
  REQUIRE(int8_t(back[0]) == -8);
  REQUIRE(int8_t(back[2]) == -1);
  unpack_rows(packed.data(), 4, 4, 8, false, back.data(), 0, 1);
  REQUIRE(back[0] == 8);
  REQUIRE(back[2] == 15);
}

TEST_CASE("shape and range checks") {
  REQUIRE(pack_shape_ok(8, 4, 32));
  REQUIRE_FALSE(pack_shape_ok(6, 4, 32));
  REQUIRE(pack_shape_ok(32, 3, 32));
  REQUIRE_FALSE(pack_shape_ok(16, 3, 32));
  REQUIRE(pack_shape_ok(8, 3, 8));
  std::vector<uint8_t> u = {0, 15, 16};
  REQUIRE(find_out_of_range(u.data(), 3, false, 4) == 2);
  REQUIRE(find_out_of_range(u.data(), 2, false, 4) == -1);
  std::vector<uint8_t> s = {uint8_t(int8_t(-8)), 7, uint8_t(int8_t(-9))};
  REQUIRE(find_out_of_range(s.data(), 3, true, 4) == 2);
  REQUIRE(find_out_of_range(s.data(), 2, true, 4) == -1);
}
