// What every CPU binding file (bindings/<loss>.cpp, compiled into caffe_mining._core) shares: array conversion and
// the checks on host arrays, over the checks both modules share (_binding_checks.hpp). The array rules are
// _core.cpp's.
#ifndef CAFFE_MINING_PYTHON_CORE_HPP_
#define CAFFE_MINING_PYTHON_CORE_HPP_

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <vector>

#include "_binding_checks.hpp"

namespace caffe_mining_bindings {
namespace host {

/// Any array-like as a NumPy array (lists and scalars too); TypeError when NumPy cannot make one.
inline py::array as_array(const py::object& x, const char* name) {
  py::array converted = x.is_none() ? py::array() : py::array::ensure(x);
  if (x.is_none() || !converted) {
    throw py::type_error(std::string(name) + " must be a float32 or float64 array. Got: " +
                         py::repr(x).cast<std::string>());
  }
  return converted;
}

inline caffe_mining_bindings::Shape shape_of(const py::array& x) {
  return caffe_mining_bindings::Shape(x.shape(), x.shape() + x.ndim());
}

inline std::string dtype_name(const py::array& x) { return py::str(x.dtype()).cast<std::string>(); }

/// N and D of a feature array: (N, D) or (N, D, 1, 1).
inline FeatureShape feature_shape(const py::array& x, const char* name) {
  return caffe_mining_bindings::feature_shape(shape_of(x), name);
}

/// Whether the features are float32 (true) or float64 (false); anything else is a TypeError.
inline bool is_float32(const py::array& x, const char* name) {
  return caffe_mining_bindings::is_float32(dtype_name(x), name);
}

/// The second feature array: same dtype and shape as the first.
inline void check_same(const py::array& first, const char* first_name, const py::array& second,
                       const char* second_name) {
  caffe_mining_bindings::check_same(dtype_name(first), shape_of(first), first_name, dtype_name(second),
                                    shape_of(second), second_name);
}

template <typename T>
void check_finite_values(const CArray<T>& x, const char* name, int dim) {
  const T* data = x.data();
  for (py::ssize_t k = 0; k < x.size(); ++k) {
    if (!std::isfinite(data[k])) caffe_mining_bindings::throw_non_finite(name, data[k], k / dim);
  }
}

template <typename T>
py::array_t<T> new_like(const py::array& x) {
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  return py::array_t<T>(shape);
}

inline void check_dtype_name(const std::string& dtype) {
  if (dtype != "float32" && dtype != "float64") {
    throw py::value_error("dtype must be 'float32' or 'float64'. Got: '" + dtype + "'");
  }
}

/// Why `options` cannot be used in `dtype` ('float32' | 'float64'), or "".
template <typename Options>
std::string options_problem(const Options& options, const std::string& dtype) {
  check_dtype_name(dtype);
  return dtype == "float32" ? options.template validate<float>() : options.template validate<double>();
}

}  // namespace host
}  // namespace caffe_mining_bindings

#endif  // CAFFE_MINING_PYTHON_CORE_HPP_
