// Pieces the weight-streaming kernels share (the M = 1 GEMV and the few-rows
// tensor-core kernel): read-once code loads, programmatic dependent launch,
// and the per-device facts their one-wave grids are sized from.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

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
// launch_early() starts while the previous one drains and waits here, before
// touching global memory, so launch latency overlaps the previous kernel's
// tail but no read or write moves ahead of it. No-ops without the attribute.
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

// Marks cfg for programmatic dependent launch where the device has it
// (`attr` must outlive the launch).
inline void launch_early(cudaLaunchConfig_t& cfg, cudaLaunchAttribute& attr, const DeviceInfo& dev) {
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = dev.major >= 9 ? 1 : 0;
}

}  // namespace quantcore::kernels
