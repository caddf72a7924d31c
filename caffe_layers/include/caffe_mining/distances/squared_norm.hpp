// |x|^2 summed in one fixed order, so that identical rows give identical values wherever they sit in memory.
// BLAS dot products are not such a function: OpenBLAS's ddot rounds differently with the row's alignment, which
// broke the tie rule (identical pairs got different costs). squared_norm is the CPU's order; the CUDA kernels use
// warp_squared_norm's (a warp per row, lane l taking elements l, l + 32, ..., then the warp's tree sum).
#ifndef CAFFE_MINING_DISTANCES_SQUARED_NORM_HPP_
#define CAFFE_MINING_DISTANCES_SQUARED_NORM_HPP_

#include "caffe_mining/common/launch.hpp"

namespace caffe_mining {

/// Eight running sums (element k goes to sum k mod 8, the elements of each sum in increasing k), then
/// ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)). The eight sums are independent, so the compiler vectorizes
/// the loop without reordering any addition.
template <typename Dtype>
inline Dtype squared_norm(int dim, const Dtype* x) {
  constexpr int kSums = 8;
  Dtype sum[kSums] = {};
  int k = 0;
  for (; k + kSums <= dim; k += kSums) {
    for (int s = 0; s < kSums; ++s) sum[s] += x[k + s] * x[k + s];
  }
  for (int s = 0; k + s < dim; ++s) sum[s] += x[k + s] * x[k + s];
  return ((sum[0] + sum[1]) + (sum[2] + sum[3])) + ((sum[4] + sum[5]) + (sum[6] + sum[7]));
}

/// diff = a - b and squared_norm(dim, diff) in one pass: the same operations in the same order (the same bits), with
/// the rows declared unaliased so that the compiler can keep the eight sums and the differences in vector lanes.
template <typename Dtype>
inline Dtype difference_squared_norm(int dim, const Dtype* __restrict a, const Dtype* __restrict b,
                                     Dtype* __restrict diff) {
  constexpr int kSums = 8;
  Dtype sum[kSums] = {};
  int k = 0;
  for (; k + kSums <= dim; k += kSums) {
    for (int s = 0; s < kSums; ++s) {
      diff[k + s] = a[k + s] - b[k + s];
      sum[s] += diff[k + s] * diff[k + s];
    }
  }
  for (int s = 0; k + s < dim; ++s) {
    diff[k + s] = a[k + s] - b[k + s];
    sum[s] += diff[k + s] * diff[k + s];
  }
  return ((sum[0] + sum[1]) + (sum[2] + sum[3])) + ((sum[4] + sum[5]) + (sum[6] + sum[7]));
}

#if defined(__CUDACC__)
/// |x|^2 of a row of dim values by one warp, x_k = element(k): lane l sums x_k^2 for k = l, l + 32, ... in
/// increasing k, then warp_sum (lane 0 holds the result). Every lane of the warp must call it.
template <typename Dtype, typename Element>
__device__ __forceinline__ Dtype warp_squared_norm(int dim, const Element& element) {
  Dtype sum = Dtype(0);
  for (int k = threadIdx.x % kWarp; k < dim; k += kWarp) {
    const Dtype x = element(k);
    sum += x * x;
  }
  return warp_sum(sum);
}
#endif

}  // namespace caffe_mining

#endif  // CAFFE_MINING_DISTANCES_SQUARED_NORM_HPP_
