// Tensor-core pieces the W4 GEMM kernels share: cp.async, mma.m16n8k16
// wrappers and the magic-number int4 -> fp16/bf16 dequantization that turns a
// lane's code word into mma fragments.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace quantcore::kernels {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy to shared address `dst`; `valid == false` writes zeros instead.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}

// An L2 policy for data read once (codes): evicted first, so x and the scales stay.
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t mask, uint32_t magic) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(a), "r"(mask), "r"(magic));  // (a & mask) | magic
  return r;
}

// ------------------------------------------------------ per-dtype helpers

template <typename T>
struct Half2Of;
template <>
struct Half2Of<__half> {
  using type = __half2;
};
template <>
struct Half2Of<__nv_bfloat16> {
  using type = __nv_bfloat162;
};

template <typename T2>
__device__ __forceinline__ uint32_t as_u32(T2 v) {
  return *reinterpret_cast<uint32_t*>(&v);
}
template <typename T2>
__device__ __forceinline__ T2 from_u32(uint32_t u) {
  return *reinterpret_cast<T2*>(&u);
}

template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// c = a b (the accumulator's old value is not read).
template <typename T>
__device__ __forceinline__ void mma_16816_zero(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816_zero<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                       uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%10,%10};\n"
      : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.f));
}
template <>
__device__ __forceinline__ void mma_16816_zero<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                              uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%10,%10};\n"
      : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.f));
}

// The four B-fragment registers of one code word: (b0, b1) of the n8 block
// with n = g and of the block with n = g + 8, as (q - z) exactly, not yet scaled.
// `off_lo` / `off_hi` hold the magic number plus the zero point of each block.
template <typename T>
struct Dequant;

template <>
struct Dequant<__half> {
  static constexpr float kMagic = 1024.f;  // fp16 0x6400: ulp 1
  __device__ __forceinline__ static void run(uint32_t q, __half2 off_lo, __half2 off_hi, uint32_t (&b)[4]) {
    // The high nibble of a byte lands at 1024 + 16 q: times 1/16 minus 64 + z
    // (= off - 960, exact) leaves q - z, one fma.
    const __half2 sixteenth = __float2half2_rn(1.f / 16.f), d960 = __float2half2_rn(960.f);
    const __half2 hi_lo = __hneg2(__hsub2(off_lo, d960)), hi_hi = __hneg2(__hsub2(off_hi, d960));
    const uint32_t q8 = q >> 8;
    b[0] = as_u32(__hsub2(from_u32<__half2>(lop3_and_or(q, 0x000f000fu, 0x64006400u)), off_lo));
    b[1] = as_u32(__hfma2(from_u32<__half2>(lop3_and_or(q, 0x00f000f0u, 0x64006400u)), sixteenth, hi_lo));
    b[2] = as_u32(__hsub2(from_u32<__half2>(lop3_and_or(q8, 0x000f000fu, 0x64006400u)), off_hi));
    b[3] = as_u32(__hfma2(from_u32<__half2>(lop3_and_or(q8, 0x00f000f0u, 0x64006400u)), sixteenth, hi_hi));
  }
};

template <>
struct Dequant<__nv_bfloat16> {
  static constexpr float kMagic = 128.f;  // bf16 0x4300: ulp 1 (7 mantissa bits, so one nibble per shift)
  __device__ __forceinline__ static void run(uint32_t q, __nv_bfloat162 off_lo, __nv_bfloat162 off_hi,
                                             uint32_t (&b)[4]) {
    b[0] = as_u32(__hsub2(from_u32<__nv_bfloat162>(lop3_and_or(q, 0x000f000fu, 0x43004300u)), off_lo));
    b[1] = as_u32(__hsub2(from_u32<__nv_bfloat162>(lop3_and_or(q >> 4, 0x000f000fu, 0x43004300u)), off_lo));
    b[2] = as_u32(__hsub2(from_u32<__nv_bfloat162>(lop3_and_or(q >> 8, 0x000f000fu, 0x43004300u)), off_hi));
    b[3] = as_u32(__hsub2(from_u32<__nv_bfloat162>(lop3_and_or(q >> 12, 0x000f000fu, 0x43004300u)), off_hi));
  }
};

template <typename T>
__device__ __forceinline__ typename Half2Of<T>::type splat(float v);
template <>
__device__ __forceinline__ __half2 splat<__half>(float v) { return __float2half2_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat162 splat<__nv_bfloat16>(float v) { return __float2bfloat162_rn(v); }

}  // namespace quantcore::kernels
