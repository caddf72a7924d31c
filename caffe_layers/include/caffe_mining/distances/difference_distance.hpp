// |x - y|^2 summed from the differences, in one fixed order and with every product rounded before it is added,
// so the CPU and a GPU thread get the same bits, identical pairs get identical values wherever they sit, and the
// value is never negative (unlike |x|^2 + |y|^2 - 2 x.y). O(dim) per pair: for losses that need every pair's
// distance exactly (MarginLoss's sampler), not for a GEMM-sized distance matrix.
#ifndef CAFFE_MINING_DISTANCES_DIFFERENCE_DISTANCE_HPP_
#define CAFFE_MINING_DISTANCES_DIFFERENCE_DISTANCE_HPP_

#include "caffe_mining/host_device.hpp"

namespace caffe_mining {

// Products and sums that nvcc may not fuse into an FMA (it does by default, and then the device's bits would not
// be the host's). A plain C++ compiler for x86-64 does not contract without -mfma (and this project never passes
// -ffp-contract=fast with it).
CM_HOST_DEVICE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
CM_HOST_DEVICE double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
CM_HOST_DEVICE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
CM_HOST_DEVICE double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

/// sum_k (x_k - y_k)^2: element k goes to running sum k mod 4 (each in increasing k), then (s0 + s1) + (s2 + s3).
template <typename Dtype>
CM_HOST_DEVICE Dtype difference_squared_distance(int dim, const Dtype* x, const Dtype* y) {
  Dtype sum[4] = {Dtype(0), Dtype(0), Dtype(0), Dtype(0)};
  for (int k = 0; k < dim; ++k) {
    const Dtype diff = x[k] - y[k];
    sum[k & 3] = add_rn(sum[k & 3], mul_rn(diff, diff));
  }
  return add_rn(add_rn(sum[0], sum[1]), add_rn(sum[2], sum[3]));
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_DISTANCES_DIFFERENCE_DISTANCE_HPP_
