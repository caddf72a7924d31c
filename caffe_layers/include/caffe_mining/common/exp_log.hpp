// The kit's own e^x for x <= 0, log1p(x) for 0 <= x <= 1 and log(x) for x >= 0, built from +, -, *, / and exponent
// bits alone, so that
// one definition gives the same bits in a CPU's scalar code, in its vector lanes (T a GCC/Clang vector of float or
// double: the same source, every operation element-wise) and on the GPU (products and sums rounded one at a time,
// never fused). libm's and CUDA's exp/log1p differ in the last bit, and vector lanes have neither.
//
//   exp:   n = round(x log2 e), r = x - n ln2_hi - n ln2_lo (Cody and Waite: n ln2_hi is exact), |r| <= 0.35;
//          e^r by its Taylor series to r^7 (float) / r^13 (double), times 2^n from the exponent bits. A result below
//          the smallest normal is scaled in two steps (2^(n + k), then 2^-k: one rounding), below half the smallest
//          subnormal it is 0.
//   log1p: log(1 + x) = 2 atanh(s), s = x / (2 + x) in [0, 1/3], by the odd series 2 s (1 + s^2/3 + s^4/5 + ...)
//          to s^13 (float) / s^31 (double); relative error ~1 ulp at every x, 0 included (log1p(0) = 0).
//   log:   x = m 2^k with m in [sqrt(1/2), sqrt(2)) from the exponent bits (a subnormal x scaled up first),
//          log x = k ln2_hi + (2 atanh(s) + k ln2_lo), s = (m - 1)/(m + 1) in [-0.172, 0.172], the odd series to
//          s^9 (float) / s^21 (double); log 0 = -inf, log inf = inf, and NaN where x < 0 or x is NaN.
// All within 2 ulp of the correctly rounded value over their domains (tests/test_exp_log.py measures them against
// double and long double references). Arguments outside the domains (a NaN, a negative log) are the callers' to
// avoid.
#ifndef CAFFE_MINING_COMMON_EXP_LOG_HPP_
#define CAFFE_MINING_COMMON_EXP_LOG_HPP_

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/common/round_to_nearest.hpp"

namespace caffe_mining {
namespace math {

namespace series_detail {
template <typename T, bool kScalar = std::is_floating_point<T>::value>
struct ElementOf {
  using type = T;
};
template <typename T>
struct ElementOf<T, false> {
  using type = typename std::remove_cv<typename std::remove_reference<decltype(T{}[0])>::type>::type;
};
}  // namespace series_detail

/// The element type of T: T itself for a scalar, its lanes' type for a vector.
template <typename T>
using Element = typename series_detail::ElementOf<T>::type;

/// kBytes of S in the lanes of a GCC/Clang vector (host code: the CPU's lanes).
template <typename S, int kBytes>
struct Lanes {
  typedef S type __attribute__((vector_size(kBytes)));
};

/// v in every lane of T (v itself for a scalar T).
template <typename T, typename S>
CM_HOST_DEVICE_LANES T splat(S v) {
  if constexpr (std::is_floating_point<T>::value) {
    return v;
  } else {
    return T{} + v;
  }
}

namespace series_detail {

/// The constants of one floating-point type.
template <typename S>
struct Format;
template <>
struct Format<float> {
  using Bits = int32_t;
  static constexpr int kMantissa = 23, kBias = 127, kMinExponent = -126, kExpTerms = 7, kLog1pTerms = 6, kLogTerms = 4;
  static constexpr Bits kSqrtHalfBits = 0x3f3504f3;  // sqrt(1/2) rounded
  static constexpr float kMinNormal = 1.17549435e-38f, kSubnormalScale = 33554432.0f;  // 2^-126, 2^25
  static constexpr int kSubnormalShift = 25;
  static constexpr float kInfinity = HUGE_VALF;
  static constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23: x + kShifter rounds x to an integer (|x| < 2^22)
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f;  // 355/512: n kLn2Hi exact for |n| < 2^15
  static constexpr float kLn2Lo = -2.12194440e-4f;
  static constexpr float kZeroBelow = -104.0f;  // e^x < 2^-150 (half the smallest subnormal): 0
  static constexpr int kDeepShift = 64;           // the two-step scale of a subnormal result
  static constexpr float kDeepScale = 5.42101086242752217e-20f;  // 2^-64
};
template <>
struct Format<double> {
  using Bits = int64_t;
  static constexpr int kMantissa = 52, kBias = 1023, kMinExponent = -1022, kExpTerms = 13, kLog1pTerms = 15,
                       kLogTerms = 10;
  static constexpr Bits kSqrtHalfBits = 0x3fe6a09e667f3bcdLL;  // sqrt(1/2) rounded
  static constexpr double kMinNormal = 2.2250738585072014e-308, kSubnormalScale = 18014398509481984.0;  // 2^54
  static constexpr int kSubnormalShift = 54;
  static constexpr double kInfinity = HUGE_VAL;
  static constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kLog2e = 1.44269504088896338700e+00;
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;  // fdlibm's: n kLn2Hi exact for |n| < 2^20
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
  static constexpr double kZeroBelow = -746.0;  // e^x < 2^-1075: 0
  static constexpr int kDeepShift = 128;
  static constexpr double kDeepScale = 2.93873587705571876992e-39;  // 2^-128
};

/// The signed integers with T's layout (a vector's comparison gives exactly that type).
template <typename T, bool kScalar = std::is_floating_point<T>::value>
struct BitsOf {
  using type = typename Format<T>::Bits;
};
template <typename T>
struct BitsOf<T, false> {
  using type = decltype(T{} < T{});
};

/// x's bits as T's signed integers, and back (memcpy: no aliasing, on host and device).
template <typename T>
CM_HOST_DEVICE_LANES typename BitsOf<T>::type bits_of(const T& x) {
  typename BitsOf<T>::type bits;
  memcpy(&bits, &x, sizeof(T));
  return bits;
}
template <typename T>
CM_HOST_DEVICE_LANES T from_bits(const typename BitsOf<T>::type& bits) {
  T x;
  memcpy(&x, &bits, sizeof(T));
  return x;
}

/// k! in S (exact here: k! < 2^24 for float's terms, < 2^53 for double's).
template <typename S>
constexpr S factorial(int k) {
  S product = S(1);
  for (int i = 2; i <= k; ++i) product = product * S(i);
  return product;
}

/// The series' coefficients, constants of the compilation (so the same on every path): 1/k! and 1/(2k + 1).
template <typename S, int k>
struct InverseFactorial {
  static constexpr S value = S(1) / factorial<S>(k);
};
template <typename S, int k>
struct InverseOdd {
  static constexpr S value = S(1) / S(2 * k + 1);
};

/// c_first + x (c_(first+1) + x (... + x c_last)), c_k = Coefficient<S, k>::value, unrolled at compile time.
template <int kFirst, int kLast, template <typename, int> class Coefficient, typename T>
CM_HOST_DEVICE_LANES T horner(T x) {
  using S = Element<T>;
  if constexpr (kFirst == kLast) {
    return splat<T>(Coefficient<S, kFirst>::value);
  } else {
    return add_rn(mul_rn(horner<kFirst + 1, kLast, Coefficient>(x), x), splat<T>(Coefficient<S, kFirst>::value));
  }
}

}  // namespace series_detail

/// e^x for x <= 0 (a NaN lane gives an unspecified value), element-wise for a vector T.
template <typename T>
CM_HOST_DEVICE_LANES T exp_nonpositive(T x) {
  using S = Element<T>;
  using F = series_detail::Format<S>;
  using Bits = typename series_detail::BitsOf<T>::type;
  using series_detail::bits_of;
  using series_detail::from_bits;
  const auto zero = x < splat<T>(F::kZeroBelow);
  x = zero ? splat<T>(S(0)) : x;  // keeps the lanes that become 0 in range
  const T shifted = add_rn(mul_rn(x, splat<T>(F::kLog2e)), splat<T>(F::kShifter));
  const T n = shifted - splat<T>(F::kShifter);  // round(x log2 e), exact
  const T r = add_rn(x - mul_rn(n, splat<T>(F::kLn2Hi)), -mul_rn(n, splat<T>(F::kLn2Lo)));
  const T p = series_detail::horner<0, F::kExpTerms, series_detail::InverseFactorial>(r);  // e^r's Taylor series
  // 2^n from the exponent bits (n >= kMinExponent), else 2^(n + kDeepShift) and a second, rounding, product.
  const auto deep = n < splat<T>(S(F::kMinExponent));
  const T exponent = add_rn(deep ? add_rn(n, splat<T>(S(F::kDeepShift))) : n, splat<T>(F::kShifter));
  const Bits power_bits = (bits_of(exponent) - bits_of(splat<T>(F::kShifter)) + F::kBias) << F::kMantissa;
  const T power = from_bits<T>(power_bits);
  const T value = mul_rn(mul_rn(p, power), deep ? splat<T>(F::kDeepScale) : splat<T>(S(1)));
  return zero ? splat<T>(S(0)) : value;
}

/// log(1 + x) for 0 <= x <= 1, element-wise for a vector T.
template <typename T>
CM_HOST_DEVICE_LANES T log1p_unit(T x) {
  using S = Element<T>;
  using F = series_detail::Format<S>;
  const T s = x / add_rn(splat<T>(S(2)), x);
  const T s2 = mul_rn(s, s);
  const T p = series_detail::horner<1, F::kLog1pTerms, series_detail::InverseOdd>(s2);  // 1/3 + s^2/5 + ...
  const T twice_s = add_rn(s, s);
  return add_rn(twice_s, mul_rn(twice_s, mul_rn(s2, p)));
}

/// log(x) for x >= 0 (log 0 = -inf, log inf = inf; NaN for a negative or NaN x), element-wise for a vector T.
template <typename T>
CM_HOST_DEVICE_LANES T log_nonnegative(T x) {
  using S = Element<T>;
  using F = series_detail::Format<S>;
  using Bits = typename series_detail::BitsOf<T>::type;
  using series_detail::bits_of;
  using series_detail::from_bits;
  const auto subnormal = x < splat<T>(F::kMinNormal);
  const T scaled = subnormal ? mul_rn(x, splat<T>(F::kSubnormalScale)) : x;  // exact
  const Bits bits = bits_of(scaled);
  // The bit patterns of positive numbers grow with them, and one more in the exponent field is twice the number:
  // k = floor((bits - bits(sqrt(1/2))) / 2^mantissa), and m = scaled 2^-k keeps the remainder's bits.
  const Bits offset = bits - F::kSqrtHalfBits;
  const Bits k = offset >> F::kMantissa;  // arithmetic shift: floor
  constexpr typename F::Bits kMantissaMask = (typename F::Bits(1) << F::kMantissa) - 1;
  const Bits m_bits = (offset & kMantissaMask) + F::kSqrtHalfBits;
  const T m = from_bits<T>(m_bits);
  const T shifter = splat<T>(F::kShifter);
  // k + kShifter's bits: k as a floating-point number, exactly.
  T k_float = from_bits<T>(bits_of(shifter) + k) - shifter;
  k_float = subnormal ? k_float - splat<T>(S(F::kSubnormalShift)) : k_float;
  const T s = (m - splat<T>(S(1))) / add_rn(m, splat<T>(S(1)));  // m - 1 exact
  const T s2 = mul_rn(s, s);
  const T p = series_detail::horner<1, F::kLogTerms, series_detail::InverseOdd>(s2);  // 1/3 + s^2/5 + ...
  const T twice_s = add_rn(s, s);
  const T low = mul_rn(k_float, splat<T>(F::kLn2Lo));
  const T log_m_and_low = add_rn(twice_s, add_rn(mul_rn(twice_s, mul_rn(s2, p)), low));
  const T value = add_rn(mul_rn(k_float, splat<T>(F::kLn2Hi)), log_m_and_low);
  const T infinity = splat<T>(F::kInfinity);
  const T ends = x == splat<T>(S(0)) ? -infinity : (x == infinity ? infinity : value);
  return x >= splat<T>(S(0)) ? ends : infinity - infinity;  // NaN for a negative or NaN x, as libm's
}

}  // namespace math
}  // namespace caffe_mining

#endif  // CAFFE_MINING_COMMON_EXP_LOG_HPP_
