// Products and sums rounded one at a time, which nvcc may not fuse into an FMA (it does by default, and then the
// device's bits would not be the host's). A plain C++ compiler for x86-64 does not contract without -mfma (and the
// project never passes -ffp-contract=fast with it), so on the host they are the plain operators.
#ifndef CAFFE_MINING_COMMON_ROUND_TO_NEAREST_HPP_
#define CAFFE_MINING_COMMON_ROUND_TO_NEAREST_HPP_

#include "caffe_mining/common/host_device.hpp"

namespace caffe_mining {
namespace math {

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

#if !defined(__CUDA_ARCH__)
/// The same in the lanes of a GCC/Clang vector (host only: the CPU's lanes), element-wise.
template <typename V>
CM_HOST_DEVICE_LANES V mul_rn(V a, V b) {
  return a * b;
}
template <typename V>
CM_HOST_DEVICE_LANES V add_rn(V a, V b) {
  return a + b;
}
#endif

}  // namespace math
}  // namespace caffe_mining

#endif  // CAFFE_MINING_COMMON_ROUND_TO_NEAREST_HPP_
