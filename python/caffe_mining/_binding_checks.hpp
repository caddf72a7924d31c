// Argument checks and their error messages, shared by the CPU bindings (_core.cpp) and the CUDA bindings
// (_core_cuda.cpp), so that both raise the same exception with the same text for the same bad argument.
// Header-only; every function throws a pybind11 exception (TypeError or ValueError) or returns.
#ifndef CAFFE_MINING_PYTHON_BINDING_CHECKS_HPP_
#define CAFFE_MINING_PYTHON_BINDING_CHECKS_HPP_

#include <pybind11/pybind11.h>

#include <cctype>
#include <climits>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "caffe_mining/hardnet.hpp"

namespace caffe_mining_bindings {

namespace py = pybind11;

using Shape = std::vector<py::ssize_t>;

/// A shape as Python prints a tuple: (3, 4), (3,), ().
inline std::string shape_repr(const Shape& shape) {
  std::ostringstream out;
  out << "(";
  for (size_t k = 0; k < shape.size(); ++k) out << (k ? ", " : "") << shape[k];
  out << (shape.size() == 1 ? ",)" : ")");
  return out.str();
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
  throw py::value_error(std::string(name) + " holds a non-finite value (" + std::to_string(value) + ") at row " +
                        std::to_string(row) + "; pass check_finite=False to compute anyway");
}

[[noreturn]] inline void throw_not_real_array(const char* name, const py::object& values) {
  throw py::type_error(std::string(name) + " must be an array of real numbers. Got: " +
                       py::repr(values).cast<std::string>());
}

inline void check_row_count(const char* name, py::ssize_t size, int n) {
  if (size != n) {
    throw py::value_error(std::string(name) + " must hold N = " + std::to_string(n) + " values. Got: " +
                          std::to_string(size));
  }
}

// ---- MiningContrastiveLoss ----

inline void check_contrastive_options(int mining_ratio, double margin, double loss_weight) {
  if (mining_ratio < 1) {
    throw py::value_error("mining_ratio must be >= 1. Got: " + std::to_string(mining_ratio));
  }
  if (!std::isfinite(margin)) throw py::value_error("margin must be finite. Got: " + std::to_string(margin));
  if (!std::isfinite(loss_weight)) {
    throw py::value_error("loss_weight must be finite. Got: " + std::to_string(loss_weight));
  }
}

[[noreturn]] inline void throw_invalid_sim(int index, double value) {
  throw py::value_error("sim must hold 0 (dissimilar) or 1 (similar). Got: sim[" + std::to_string(index) + "] = " +
                        std::to_string(value));
}

// ---- HardNetLoss ----

inline caffe_mining::HardNetBatchReduce parse_batch_reduce(std::string name) {
  for (auto& c : name) c = static_cast<char>(toupper(c));
  if (name == "MIN") return caffe_mining::HardNetBatchReduce::kMin;
  if (name == "AVERAGE") return caffe_mining::HardNetBatchReduce::kAverage;
  if (name == "RANDOM") return caffe_mining::HardNetBatchReduce::kRandom;
  throw py::value_error("batch_reduce must be one of MIN, AVERAGE, RANDOM. Got: '" + name + "'");
}

inline caffe_mining::HardNetLossType parse_loss_type(std::string name) {
  for (auto& c : name) c = static_cast<char>(toupper(c));
  if (name == "TRIPLET_MARGIN") return caffe_mining::HardNetLossType::kTripletMargin;
  if (name == "SOFTMAX") return caffe_mining::HardNetLossType::kSoftmax;
  if (name == "CONTRASTIVE") return caffe_mining::HardNetLossType::kContrastive;
  throw py::value_error("loss_type must be one of TRIPLET_MARGIN, SOFTMAX, CONTRASTIVE. Got: '" + name + "'");
}

/// The checked options of hardnet_loss (loss_weight is checked too, though not an option of the core).
inline caffe_mining::HardNetOptions hardnet_options(double margin, bool anchor_swap, const std::string& batch_reduce,
                                                    const std::string& loss_type, double eps,
                                                    double duplicate_threshold, double loss_weight) {
  if (!(margin >= 0) || !std::isfinite(margin)) {
    throw py::value_error("margin must be finite and >= 0. Got: " + std::to_string(margin));
  }
  if (!(eps > 0) || !std::isfinite(eps)) throw py::value_error("eps must be finite and > 0. Got: " + std::to_string(eps));
  if (!(duplicate_threshold >= 0) || !std::isfinite(duplicate_threshold)) {
    throw py::value_error("duplicate_threshold must be finite and >= 0. Got: " + std::to_string(duplicate_threshold));
  }
  if (!std::isfinite(loss_weight)) {
    throw py::value_error("loss_weight must be finite. Got: " + std::to_string(loss_weight));
  }
  caffe_mining::HardNetOptions options;
  options.margin = margin;
  options.anchor_swap = anchor_swap;
  options.batch_reduce = parse_batch_reduce(batch_reduce);
  options.loss_type = parse_loss_type(loss_type);
  options.eps = eps;
  options.duplicate_threshold = duplicate_threshold;
  return options;
}

inline void check_hardnet_rows(int n) {
  if (n < 2) {
    throw py::value_error("HardNetLoss needs N >= 2 pairs (a negative comes from another row). Got: N = " +
                          std::to_string(n));
  }
}

[[noreturn]] inline void throw_bad_label(int index, double value) {
  throw py::value_error("labels must be finite and exactly representable in the features' dtype. Got: "
                        "labels[" + std::to_string(index) + "] = " + std::to_string(value));
}

[[noreturn]] inline void throw_missing_uniforms() {
  throw py::value_error("batch_reduce RANDOM needs uniforms: N values in [0, 1), one per row");
}

/// `value` is printed as the features' dtype prints it (std::to_string of float and of double agree).
[[noreturn]] inline void throw_bad_uniform(int index, double value) {
  throw py::value_error("uniforms must lie in [0, 1). Got: uniforms[" + std::to_string(index) + "] = " +
                        std::to_string(value));
}

}  // namespace caffe_mining_bindings

#endif  // CAFFE_MINING_PYTHON_BINDING_CHECKS_HPP_
