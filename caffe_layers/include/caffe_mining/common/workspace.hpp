// Caller-owned workspace: every loss states its size in bytes with one function, `<loss>_workspace_bytes(n,
// options, device)`, for the path (Device) that will run; the caller passes at least that many bytes, aligned
// like cudaMalloc's (256 bytes) on the GPU and like malloc's on the CPU.
#ifndef CAFFE_MINING_COMMON_WORKSPACE_HPP_
#define CAFFE_MINING_COMMON_WORKSPACE_HPP_

#include <cstddef>

namespace caffe_mining {

/// Which path a call runs on.
enum class Device { kCpu, kGpu };

/// bytes rounded up to a multiple of 256 (cudaMalloc's alignment), so that pieces carved in turn stay aligned.
inline std::size_t aligned_bytes(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace caffe_mining

#endif  // CAFFE_MINING_COMMON_WORKSPACE_HPP_
