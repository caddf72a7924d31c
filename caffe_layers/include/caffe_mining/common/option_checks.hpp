// Range checks of the losses' options, shared by the Caffe layers (CHECK on the message), the Python bindings
// (ValueError with the message) and, through the bindings, the Python options: one validation, one wording.
// A value must be finite and in range both as given (double, as the proto and Python hold it) and once rounded to
// the Dtype the loss runs in (float: 1e-50 becomes 0 and 1e39 becomes inf).
#ifndef CAFFE_MINING_COMMON_OPTION_CHECKS_HPP_
#define CAFFE_MINING_COMMON_OPTION_CHECKS_HPP_

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace caffe_mining {

template <typename Dtype>
inline const char* dtype_name() { return sizeof(Dtype) == sizeof(float) ? "float32" : "float64"; }

/// The shortest decimal that reads back as `value` (as Python's repr), so a message never shows a rounded value.
inline std::string format_value(double value) {
  char text[32];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(text, sizeof(text), "%.*g", digits, value);
    if (std::strtod(text, nullptr) == value || std::isnan(value)) break;
  }
  return text;
}

/// "" when `value` is finite and >= lower (> lower when strict), in double and as Dtype; else what is wrong.
template <typename Dtype>
std::string option_range_problem(const char* name, double value, double lower, bool strict) {
  const std::string bound = std::string(strict ? "> " : ">= ") + format_value(lower);
  const std::string got = ". Got: " + format_value(value);
  if (!std::isfinite(value)) return std::string(name) + " must be finite" + got;
  if (strict ? !(value > lower) : !(value >= lower)) return std::string(name) + " must be " + bound + got;
  const double rounded = static_cast<double>(static_cast<Dtype>(value));
  if (!std::isfinite(rounded) || (strict ? !(rounded > lower) : !(rounded >= lower))) {
    const std::string rule = std::isinf(lower) ? "finite" : bound + " and finite";
    return std::string(name) + " must stay " + rule + " once rounded to " + dtype_name<Dtype>() + " (it becomes " +
           format_value(rounded) + ")" + got;
  }
  return "";
}

/// "" when `value` is finite in double and as Dtype; else what is wrong.
template <typename Dtype>
std::string option_finite_problem(const char* name, double value) {
  return option_range_problem<Dtype>(name, value, -HUGE_VAL, false);
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_COMMON_OPTION_CHECKS_HPP_
