// |x - y|^2 summed from the differences, in one fixed order and with every product rounded before it is added,
// so the CPU and a GPU thread get the same bits, identical pairs get identical values wherever they sit, and the
// value is never negative (unlike |x|^2 + |y|^2 - 2 x.y). O(dim) per pair: for losses that need every pair's
// distance exactly (MarginLoss's sampler), not for a GEMM-sized distance matrix.
#ifndef CAFFE_MINING_DISTANCES_DIFFERENCE_DISTANCE_HPP_
#define CAFFE_MINING_DISTANCES_DIFFERENCE_DISTANCE_HPP_

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/common/round_to_nearest.hpp"

namespace caffe_mining {

/// sum_k (x_k - y_k)^2: element k goes to running sum k mod 4 (each in increasing k), then (s0 + s1) + (s2 + s3).
template <typename Dtype>
CM_HOST_DEVICE Dtype difference_squared_distance(int dim, const Dtype* x, const Dtype* y) {
  Dtype sum[4] = {Dtype(0), Dtype(0), Dtype(0), Dtype(0)};
  for (int k = 0; k < dim; ++k) {
    const Dtype diff = x[k] - y[k];
    sum[k & 3] = math::add_rn(sum[k & 3], math::mul_rn(diff, diff));
  }
  return math::add_rn(math::add_rn(sum[0], sum[1]), math::add_rn(sum[2], sum[3]));
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_DISTANCES_DIFFERENCE_DISTANCE_HPP_
