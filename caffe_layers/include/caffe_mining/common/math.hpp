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

/// e^-|x|, the one exponential that softplus and sigmoid share; element-wise for a vector T (the CPU's lanes).
template <typename T>
CM_HOST_DEVICE_LANES T exp_minus_abs(const T& x) {
  const T zero = splat<T>(Element<T>(0));
  return exp_nonpositive(x < zero ? x : -x);
}

/// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|) (no overflow for large |x|), given e = exp_minus_abs(x).
template <typename T>
CM_HOST_DEVICE_LANES T softplus_with(const T& x, const T& e) {
  const T zero = splat<T>(Element<T>(0));
  return (x > zero ? x : zero) + log1p_unit(e);
}

/// sigmoid(x) = 1 / (1 + e^-x), the derivative of softplus, given e = exp_minus_abs(x): e^x / (1 + e^x) for x < 0.
template <typename T>
CM_HOST_DEVICE_LANES T sigmoid_with(const T& x, const T& e) {
  const T zero = splat<T>(Element<T>(0)), one = splat<T>(Element<T>(1));
  return (x >= zero ? one : e) / (one + e);
}

template <typename Dtype>
CM_HOST_DEVICE Dtype softplus(Dtype x) {
  return softplus_with(x, exp_minus_abs(x));
}

template <typename Dtype>
CM_HOST_DEVICE Dtype sigmoid(Dtype x) {
  return sigmoid_with(x, exp_minus_abs(x));
}

/// x / y, 0 when y is 0 (a zero distance only happens with eps = 0, and then its numerator a - p is 0 as well).
template <typename Dtype>
CM_HOST_DEVICE Dtype safe_div(Dtype x, Dtype y) {
  return y != Dtype(0) ? x / y : Dtype(0);
}

}  // namespace math
}  // namespace caffe_mining

#endif  // CAFFE_MINING_COMMON_MATH_HPP_
