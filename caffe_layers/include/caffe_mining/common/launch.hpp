// Launch shapes of the core's CUDA kernels, one set for every loss: block size, grid size for a grid-stride loop,
// the warp. The sizes are plain host arithmetic (no CUDA headers, so the CPU tests can include the steps that use
// kWarp); warp_sum is compiled by nvcc only.
#ifndef CAFFE_MINING_COMMON_LAUNCH_HPP_
#define CAFFE_MINING_COMMON_LAUNCH_HPP_

#include <cstddef>

namespace caffe_mining {

constexpr int kWarp = 32;
constexpr int kThreads = 256;  // threads per block; a power of two for the tree reductions
constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int kMaxBlocks = 65535;  // beyond that the kernels' grid-stride loops take the rest
constexpr unsigned int kFullMask = 0xffffffffu;

/// Blocks of kThreads for `count` independent elements, at least 1.
inline int blocks_for(std::size_t count) {
  const std::size_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

/// Blocks of kThreads for `rows` rows of one warp each.
inline int blocks_for_warps(int rows) { return blocks_for(static_cast<std::size_t>(rows) * kWarp); }

#if defined(__CUDACC__)
/// The warp's tree sum (offsets 16, 8, 4, 2, 1), in lane 0: one fixed order, so a rerun gives the same bits.
/// Every lane of the warp must call it.
template <typename Dtype>
__device__ __forceinline__ Dtype warp_sum(Dtype value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_down_sync(kFullMask, value, offset);
  return value;
}
#endif

}  // namespace caffe_mining

#endif  // CAFFE_MINING_COMMON_LAUNCH_HPP_
