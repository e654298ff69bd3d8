// Pieces the weight-streaming kernels share (the M = 1 GEMV, the few-rows
// kernel and the stream-K GEMM): read-once code loads, programmatic dependent
// launch, and the per-device facts their one-wave grids are sized from.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <utility>

namespace quantcore::kernels {

// Codes are read once: no L1 allocation, so x and the scales keep L1.
// volatile keeps each load where the kernel issues it (ahead of the math it
// overlaps).
__device__ __forceinline__ uint4 load_codes_nc(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Programmatic dependent launch (sm_90 on): a kernel launched with
// launch_early() starts while the previous one drains and waits here before
// touching anything a kernel may have written (x, y, split-K counters), so
// launch latency overlaps the previous kernel's tail but no such read or
// write moves ahead of it. The weight-streaming kernels request their first
// codes before the wait, so those bytes stream in during the previous kernel's
// tail too. Only the wait promises that the previous kernel's writes are
// visible (a CTA that never triggers does so implicitly when it exits), so
// this is safe only because no kernel in a PDL chain right before these ones
// writes weights: our own kernels trigger after their own wait and write
// nothing but y, split-K partial sums and counters. A graph that writes a
// layer's weights in the kernel right before using it needs QUANTCORE_PDL=0.
// No-ops without the attribute.
__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

struct DeviceInfo {
  int sms, major, smem_optin;  // multiprocessors, compute capability major, max shared memory a block may opt in to
};

// The current device's DeviceInfo, read once per device.
inline cudaError_t current_device_info(DeviceInfo& info) {
  constexpr int kMaxDevices = 64;
  struct Slot {
    std::atomic<int> ready{0};
    DeviceInfo info{};
  };
  static Slot slots[kMaxDevices];
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  if (dev < kMaxDevices && slots[dev].ready.load(std::memory_order_acquire)) {
    info = slots[dev].info;
    return cudaSuccess;
  }
  DeviceInfo d{};
  if ((e = cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return e;
  if ((e = cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev)) != cudaSuccess) return e;
  if ((e = cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) != cudaSuccess)
    return e;
  if (d.sms < 1) d.sms = 1;
  if (dev < kMaxDevices) {  // racing writers store the same values
    slots[dev].info = d;
    slots[dev].ready.store(1, std::memory_order_release);
  }
  info = d;
  return cudaSuccess;
}

// Opts `Kernel` in to `smem` bytes of dynamic shared memory on the current
// device (once per device) and returns how many CTAs of `threads` fit on one SM.
// A template on the kernel itself, so every kernel keeps its own record.
template <auto Kernel>
cudaError_t prepare_kernel(int threads, int smem, int* ctas_per_sm) {
  static unsigned long long configured = 0;  // bit d: done on device d (a race only repeats the call)
  static int occupancy[64] = {};
  int dev = 0;
  if (cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return e;
  const int slot = dev < 64 ? dev : 63;
  if (dev >= 64 || !(configured >> dev & 1ull)) {
    cudaError_t e = cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occupancy[slot], Kernel, threads, smem);
    if (e != cudaSuccess) return e;
    if (dev < 64) configured |= 1ull << dev;
  }
  if (ctas_per_sm) *ctas_per_sm = occupancy[slot] > 0 ? occupancy[slot] : 1;
  return cudaSuccess;
}

// The CTAs of `Kernel` (`threads`, `smem` bytes of dynamic shared memory)
// resident at once when a launch is cut into 1-D clusters of k CTAs, for k = 1
// .. kMax: waves[k], 0 where clusters of k cannot launch. Clusters must sit
// whole in one GPC, so waves[k] can fall short of waves[1] (SMs x CTAs per SM).
// 9-16 are "non-portable" sizes (Hopper has them). Read once per device; an
// error left by an earlier launch is returned, not cleared or cached.
template <auto Kernel, int kMax>
cudaError_t cluster_waves(int threads, int smem, int64_t (&waves)[kMax + 1]) {
  static std::mutex lock;
  static int64_t cache[64][kMax + 1];
  static unsigned long long known = 0;  // bit d: cache[d] is filled
  int dev = 0;
  if (cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return e;
  const int slot = dev < 64 ? dev : 63;
  std::lock_guard<std::mutex> guard(lock);
  if (dev >= 64 || !(known >> dev & 1ull)) {
    if (cudaError_t e = cudaPeekAtLastError(); e != cudaSuccess) return e;
    int per_sm = 0;
    if (cudaError_t e = prepare_kernel<Kernel>(threads, smem, &per_sm); e != cudaSuccess) return e;
    DeviceInfo info;
    if (cudaError_t e = current_device_info(info); e != cudaSuccess) return e;
    cache[slot][0] = 0;
    cache[slot][1] = int64_t(per_sm) * info.sms;
    if (cudaFuncSetAttribute(Kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess)
      (void)cudaGetLastError();  // no pending error before: this one is the call's own
    for (int k = 2; k <= kMax; ++k) {
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(unsigned(k));
      cfg.blockDim = dim3(unsigned(threads));
      cfg.dynamicSmemBytes = size_t(smem);
      cudaLaunchAttribute attr;
      attr.id = cudaLaunchAttributeClusterDimension;
      attr.val.clusterDim.x = unsigned(k);
      attr.val.clusterDim.y = attr.val.clusterDim.z = 1;
      cfg.attrs = &attr;
      cfg.numAttrs = 1;
      int clusters = 0;
      if (cudaOccupancyMaxActiveClusters(&clusters, Kernel, &cfg) != cudaSuccess) {
        (void)cudaGetLastError();  // likewise the query's own
        clusters = 0;
      }
      cache[slot][k] = int64_t(clusters) * k;
    }
    if (dev < 64) known |= 1ull << dev;
  }
  for (int k = 0; k <= kMax; ++k) waves[k] = cache[slot][k];
  return cudaSuccess;
}

// When a launch may overlap the previous kernel's tail (programmatic dependent
// launch): QUANTCORE_PDL=1 always, =0 never (read once); otherwise only while
// `stream` is being captured into a CUDA graph. On the H100 (benchmarks/RESULTS.md,
// 2026-11-25) PDL made replayed graphs faster (W4 GEMV 8192 x 8192: 14.3 against
// 14.7 us; 16-row GEMM 26.2 against 27.5 us) but eager launches slower (the
// 16-row GEMM 37-39 against 28-30 us over three interleaved runs).
inline bool use_pdl(cudaStream_t stream) {
  static const int forced = [] {
    const char* v = std::getenv("QUANTCORE_PDL");
    return v == nullptr || v[0] == '\0' ? -1 : v[0] == '1' ? 1 : 0;
  }();
  if (forced >= 0) return forced == 1;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    (void)cudaGetLastError();  // e.g. the legacy stream while another captures: not an error of ours
    return false;
  }
  return status == cudaStreamCaptureStatusActive;
}

// Launches kernel<<<grid, block, smem, stream>>>(args...), with programmatic
// dependent launch where the device has it (sm_90 on) and use_pdl() says so,
// so the kernel's launch overlaps the previous kernel's tail; the kernel must
// call wait_for_previous_grid() before touching global memory. `cluster` > 1
// groups consecutive CTAs into thread-block clusters of that size (sm_90 on;
// grid a multiple of it).
template <typename... Params, typename... Args>
cudaError_t launch_early_clustered(void (*kernel)(Params...), unsigned grid, unsigned block, size_t smem,
                                   unsigned cluster, cudaStream_t stream, const DeviceInfo& dev, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(block);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2];
  unsigned n = 0;
  if (dev.major >= 9 && use_pdl(stream)) {
    attrs[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster > 1) {
    attrs[n].id = cudaLaunchAttributeClusterDimension;
    attrs[n].val.clusterDim.x = cluster;
    attrs[n].val.clusterDim.y = 1;
    attrs[n++].val.clusterDim.z = 1;
  }
  cfg.attrs = attrs;
  cfg.numAttrs = n;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

template <typename... Params, typename... Args>
cudaError_t launch_early(void (*kernel)(Params...), unsigned grid, unsigned block, size_t smem, cudaStream_t stream,
                         const DeviceInfo& dev, Args&&... args) {
  return launch_early_clustered(kernel, grid, block, smem, 1u, stream, dev, std::forward<Args>(args)...);
}

}  // namespace quantcore::kernels
