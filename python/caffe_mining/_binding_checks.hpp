// Argument checks that every loss's bindings share, the CPU ones (bindings/<loss>.cpp, in _core) and the CUDA ones
// (bindings/<loss>_cuda.cpp, in _core_cuda): the same exception and the same text for the same bad argument. Device
// arrays give their shapes through __cuda_array_interface__, so these helpers take shape vectors and dtype names;
// the option rules themselves are the core's (caffe_mining/common/option_checks.hpp and the losses' options'
// validate()). A loss's own checks are in bindings/<loss>_checks.hpp.
#ifndef CAFFE_MINING_PYTHON_BINDING_CHECKS_HPP_
#define CAFFE_MINING_PYTHON_BINDING_CHECKS_HPP_

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "caffe_mining/common/option_checks.hpp"
#include "caffe_mining/miners/label_masks.hpp"  // find_non_finite_label: the core's rule for real class ids

namespace caffe_mining_bindings {

namespace py = pybind11;

using Shape = std::vector<py::ssize_t>;
template <typename T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

/// A shape as Python prints a tuple: (3, 4), (3,), ().
inline std::string shape_repr(const Shape& shape) {
  std::ostringstream out;
  out << "(";
  for (size_t k = 0; k < shape.size(); ++k) out << (k ? ", " : "") << shape[k];
  out << (shape.size() == 1 ? ",)" : ")");
  return out.str();
}

inline void raise_if(const std::string& problem) {
  if (!problem.empty()) throw py::value_error(problem);
}

/// N and D of a feature array: (N, D) or (N, D, 1, 1).
struct FeatureShape {
  int n;
  int dim;
};

inline FeatureShape feature_shape(const Shape& shape, const char* name) {
  const bool caffe_4d = shape.size() == 4 && shape[2] == 1 && shape[3] == 1;
  if (shape.size() != 2 && !caffe_4d) {
    throw py::value_error(std::string(name) + " must have shape (N, D) or (N, D, 1, 1). Got: " + shape_repr(shape));
  }
  if (shape[0] < 1 || shape[1] < 1) {
    throw py::value_error(std::string(name) + " must have N >= 1 rows and D >= 1 columns. Got: (" +
                          std::to_string(shape[0]) + ", " + std::to_string(shape[1]) + ")");
  }
  if (shape[0] > INT_MAX || shape[1] > INT_MAX || shape[0] * shape[1] > INT_MAX) {
    throw py::value_error(std::string(name) + " is too large for the core's int sizes");
  }
  return {static_cast<int>(shape[0]), static_cast<int>(shape[1])};
}

/// Whether a dtype name is float32 (true) or float64 (false); anything else is a TypeError.
inline bool is_float32(const std::string& dtype, const char* name) {
  if (dtype == "float32") return true;
  if (dtype == "float64") return false;
  throw py::type_error(std::string(name) + " must be float32 or float64. Got: " + dtype);
}

/// The second feature array: same dtype and shape as the first.
inline void check_same(const std::string& first_dtype, const Shape& first_shape, const char* first_name,
                       const std::string& second_dtype, const Shape& second_shape, const char* second_name) {
  if (first_dtype != second_dtype) {
    throw py::type_error(std::string(second_name) + " must have the dtype of " + first_name + " (" + first_dtype +
                         "). Got: " + second_dtype);
  }
  if (first_shape != second_shape) {
    throw py::value_error(std::string(second_name) + " must have the shape of " + first_name + " (" +
                          shape_repr(first_shape) + "). Got: " + shape_repr(second_shape));
  }
}

[[noreturn]] inline void throw_non_finite(const char* name, double value, long long row) {
  throw py::value_error(std::string(name) + " holds a non-finite value (" + caffe_mining::format_value(value) +
                        ") at row " + std::to_string(row) + "; pass check_finite=False to compute anyway");
}

/// N values (any shape) converted to T, as _core converts them.
template <typename T>
CArray<T> per_row_values(const py::object& values, const char* name, int n) {
  CArray<T> converted = values.is_none() ? CArray<T>() : CArray<T>::ensure(values);
  if (values.is_none() || !converted) {
    throw py::type_error(std::string(name) + " must be an array of real numbers. Got: " +
                         py::repr(values).cast<std::string>());
  }
  if (converted.size() != n) {
    throw py::value_error(std::string(name) + " must hold N = " + std::to_string(n) + " values. Got: " +
                          std::to_string(converted.size()));
  }
  return converted;
}

/// The row count of a device array of per-row values, with _core's message.
inline void check_row_count(const char* name, py::ssize_t size, int n) {
  if (size != n) {
    throw py::value_error(std::string(name) + " must hold N = " + std::to_string(n) + " values. Got: " +
                          std::to_string(size));
  }
}

/// Labels as dense class ids 0..k-1 (their rank among the distinct values), as _core makes them: integer and
/// boolean labels exactly, real ones after a check that they are finite.
template <typename T>
CArray<T> dense_class_ids(const py::object& labels_in, int n) {
  const py::array given = py::array::ensure(labels_in);
  const std::string kind = given ? py::str(given.dtype().attr("kind")).cast<std::string>() : "";
  std::vector<double> as_double;
  std::vector<int64_t> as_int;
  if (kind == "i" || kind == "u" || kind == "b") {
    const CArray<int64_t> ids = per_row_values<int64_t>(labels_in, "labels", n);
    as_int.assign(ids.data(), ids.data() + n);
  } else {
    const CArray<double> ids = per_row_values<double>(labels_in, "labels", n);
    as_double.assign(ids.data(), ids.data() + n);
    const int invalid = caffe_mining::find_non_finite_label(as_double.data(), n);
    if (invalid >= 0) {
      throw py::value_error("labels must be finite class ids. Got: labels[" + std::to_string(invalid) + "] = " +
                            caffe_mining::format_value(as_double[invalid]));
    }
  }
  CArray<T> dense(n);
  auto assign = [&](auto& values) {
    auto sorted = values;
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    for (int i = 0; i < n; ++i) {
      dense.mutable_data()[i] = T(std::lower_bound(sorted.begin(), sorted.end(), values[i]) - sorted.begin());
    }
  };
  if (!as_int.empty()) assign(as_int); else if (!as_double.empty()) assign(as_double);
  return dense;
}

}  // namespace caffe_mining_bindings

#endif  // CAFFE_MINING_PYTHON_BINDING_CHECKS_HPP_
