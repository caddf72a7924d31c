// float/double math on host and device, one overload set for every loss: compiled by nvcc the device's functions,
// by a plain C++ compiler libm's (the same IEEE operations for sqrt and nextafter). softplus and sigmoid are built
// on the kit's own exp and log1p (common/exp_log.hpp), so they are the same bits on the host and the device.
#ifndef CAFFE_MINING_COMMON_MATH_HPP_
#define CAFFE_MINING_COMMON_MATH_HPP_

#include <math.h>

#include "caffe_mining/common/exp_log.hpp"
#include "caffe_mining/common/host_device.hpp"

namespace caffe_mining {
namespace math {

CM_HOST_DEVICE float sqrt(float x) { return ::sqrtf(x); }
CM_HOST_DEVICE double sqrt(double x) { return ::sqrt(x); }

/// The next representable value towards +infinity / towards 0 (x >= 0 in the callers).
CM_HOST_DEVICE float next_up(float x) { return ::nextafterf(x, INFINITY); }
CM_HOST_DEVICE double next_up(double x) { return ::nextafter(x, static_cast<double>(INFINITY)); }
CM_HOST_DEVICE float next_down(float x) { return ::nextafterf(x, 0.0f); }
CM_HOST_DEVICE double next_down(double x) { return ::nextafter(x, 0.0); }

/// Whether x is finite (inf - inf and NaN - NaN are NaN); the same test on host and device.
template <typename Dtype>
CM_HOST_DEVICE bool is_finite(Dtype x) {
  return x - x == Dtype(0);
}

/// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|), without overflow for large |x|.
template <typename Dtype>
CM_HOST_DEVICE Dtype softplus(Dtype x) {
  const Dtype abs_x = x < Dtype(0) ? -x : x;
  return (x > Dtype(0) ? x : Dtype(0)) + log1p_unit(exp_nonpositive(-abs_x));
}

/// sigmoid(x) = 1 / (1 + e^-x), the derivative of softplus, without overflow: e^-|x| / (1 + e^-|x|) for x < 0.
template <typename Dtype>
CM_HOST_DEVICE Dtype sigmoid(Dtype x) {
  if (x >= Dtype(0)) return Dtype(1) / (Dtype(1) + exp_nonpositive(-x));
  const Dtype e = exp_nonpositive(x);
  return e / (Dtype(1) + e);
}

/// x / y, 0 when y is 0 (a zero distance only happens with eps = 0, and then its numerator a - p is 0 as well).
template <typename Dtype>
CM_HOST_DEVICE Dtype safe_div(Dtype x, Dtype y) {
  return y != Dtype(0) ? x / y : Dtype(0);
}

}  // namespace math
}  // namespace caffe_mining

#endif  // CAFFE_MINING_COMMON_MATH_HPP_
