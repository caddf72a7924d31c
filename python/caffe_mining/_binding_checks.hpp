// Argument checks of both bindings, the CPU one (_core.cpp) and the CUDA one (_core_cuda.cpp): the same exception
// and the same text for the same bad argument. Device arrays give their shapes through __cuda_array_interface__, so
// these helpers take shape vectors and dtype names; the option rules themselves are the core's
// (caffe_mining/common/option_checks.hpp and the losses' options' validate()).
#ifndef CAFFE_MINING_PYTHON_BINDING_CHECKS_HPP_
#define CAFFE_MINING_PYTHON_BINDING_CHECKS_HPP_

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "caffe_mining/common/option_checks.hpp"
#include "caffe_mining/contrastive_mining.hpp"
#include "caffe_mining/hardnet.hpp"
#include "caffe_mining/margin.hpp"
#include "caffe_mining/triplet.hpp"

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

[[noreturn]] inline void throw_invalid_sim(int index, double value) {
  throw py::value_error("sim must hold 0 (dissimilar) or 1 (similar). Got: sim[" + std::to_string(index) + "] = " +
                        caffe_mining::format_value(value));
}

[[noreturn]] inline void throw_missing_uniforms() {
  throw py::value_error("batch_reduce RANDOM needs uniforms: N values in [0, 1), one per row");
}

[[noreturn]] inline void throw_bad_uniform(int index, double value) {
  throw py::value_error("uniforms must lie in [0, 1). Got: uniforms[" + std::to_string(index) + "] = " +
                        caffe_mining::format_value(value));
}

/// Host uniforms checked in double (as _core does), then converted to T.
template <typename T>
CArray<T> host_uniforms(const py::object& uniforms_in, int n) {
  const CArray<double> given = per_row_values<double>(uniforms_in, "uniforms", n);
  for (int i = 0; i < n; ++i) {
    const double u = given.data()[i];
    if (!(u >= 0.0 && u < 1.0)) throw_bad_uniform(i, u);
  }
  return per_row_values<T>(uniforms_in, "uniforms", n);
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
    const int invalid = caffe_mining::hardnet_find_invalid_label(as_double.data(), n);
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

/// The contrastive options of the bindings' keywords.
inline caffe_mining::ContrastiveOptions contrastive_options(double margin, bool legacy_version, int mining_ratio) {
  caffe_mining::ContrastiveOptions options;
  options.margin = margin;
  options.legacy_version = legacy_version;
  options.mining_ratio = mining_ratio;
  return options;
}

/// The HardNet options of the bindings' keywords (enum names as caffe.proto spells them, any case).
inline caffe_mining::HardNetOptions hardnet_options(double margin, bool anchor_swap, const std::string& batch_reduce,
                                                    const std::string& loss_type, double eps,
                                                    double duplicate_threshold) {
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

inline caffe_mining::TripletMiner parse_triplet_mining(std::string name) {
  for (auto& c : name) c = static_cast<char>(toupper(c));
  if (name == "BATCH_HARD") return caffe_mining::TripletMiner::kBatchHard;
  if (name == "BATCH_ALL") return caffe_mining::TripletMiner::kBatchAll;
  if (name == "SEMI_HARD") return caffe_mining::TripletMiner::kSemiHard;
  throw py::value_error("mining must be one of BATCH_HARD, BATCH_ALL, SEMI_HARD. Got: '" + name + "'");
}

inline caffe_mining::TripletOptions triplet_options(double margin, bool soft_margin, bool squared,
                                                    const std::string& mining, double eps) {
  caffe_mining::TripletOptions options;
  options.margin = margin;
  options.soft_margin = soft_margin;
  options.squared = squared;
  options.mining = parse_triplet_mining(mining);
  options.eps = eps;
  return options;
}

inline void check_triplet_rows(int n) {
  if (n > caffe_mining::triplet_max_rows()) {
    throw py::value_error("TripletLoss takes at most N = " + std::to_string(caffe_mining::triplet_max_rows()) +
                          " rows. Got: N = " + std::to_string(n));
  }
}

/// TripletLoss labels as dense class ids 0..C-1 in T (equality kept, so float32 never merges two large ids); they
/// must be finite integer values.
template <typename T>
CArray<T> triplet_class_ids(const py::object& labels_in, int n) {
  const CArray<double> given = per_row_values<double>(labels_in, "labels", n);
  const int invalid = caffe_mining::triplet_find_invalid_label(given.data(), n);
  if (invalid >= 0) {
    throw py::value_error("labels must be finite integer class ids. Got: labels[" + std::to_string(invalid) +
                          "] = " + caffe_mining::format_value(given.data()[invalid]));
  }
  return dense_class_ids<T>(labels_in, n);
}

/// The mined triplets as rows (anchor, positive, negative): BATCH_HARD one per anchor, SEMI_HARD one per ordered
/// positive pair in increasing (a, p); -1 where none was mined; BATCH_ALL none. From host copies of the decisions.
template <typename T>
std::vector<int64_t> triplet_rows(caffe_mining::TripletMiner miner, int n, const T* labels, const int* positive,
                                  const int* negative, const int* pair_negative) {
  std::vector<int64_t> rows;
  if (miner == caffe_mining::TripletMiner::kBatchHard) {
    for (int a = 0; a < n; ++a) rows.insert(rows.end(), {a, positive[a], negative[a]});
  } else if (miner == caffe_mining::TripletMiner::kSemiHard) {
    for (int a = 0; a < n; ++a) {
      for (int p = 0; p < n; ++p) {
        if (caffe_mining::is_positive_of(labels, a, p)) {
          rows.insert(rows.end(), {a, p, pair_negative[static_cast<std::size_t>(a) * n + p]});
        }
      }
    }
  }
  return rows;
}

/// MarginLoss labels (host values): checked as given (integers; in [0, num_classes) when it is > 0), then as T:
/// class ids by rank when only their equality matters (large ids stay distinct in float32), else as they are.
template <typename T>
CArray<T> margin_labels(const py::object& labels_in, int n, int num_classes) {
  const CArray<double> given = per_row_values<double>(labels_in, "labels", n);
  const int invalid = caffe_mining::margin_find_invalid_label(given.data(), n, num_classes);
  if (invalid >= 0) {
    const std::string range = num_classes > 0 ? " in [0, num_classes = " + std::to_string(num_classes) + ")" : "";
    throw py::value_error("labels must be integer class ids" + range + ". Got: labels[" + std::to_string(invalid) +
                          "] = " + caffe_mining::format_value(given.data()[invalid]));
  }
  return num_classes > 0 ? per_row_values<T>(labels_in, "labels", n) : dense_class_ids<T>(labels_in, n);
}

/// MarginLoss beta (host values): max(1, num_classes) values, every one beta_init when None; finite unless
/// check_finite is off.
template <typename T>
CArray<T> margin_beta(const py::object& beta_in, int betas, double beta_init, bool check_finite) {
  CArray<T> beta;
  if (beta_in.is_none()) {
    beta = CArray<T>(betas);
    for (int c = 0; c < betas; ++c) beta.mutable_data()[c] = static_cast<T>(beta_init);
    return beta;
  }
  beta = CArray<T>::ensure(beta_in);
  if (!beta || beta.size() != betas) {
    throw py::value_error("beta must hold max(1, num_classes) = " + std::to_string(betas) + " values. Got: " +
                          (beta ? std::to_string(beta.size()) : py::repr(beta_in).cast<std::string>()));
  }
  for (int c = 0; check_finite && c < betas; ++c) {
    if (!std::isfinite(beta.data()[c])) {
      throw py::value_error("beta holds a non-finite value (" + caffe_mining::format_value(beta.data()[c]) +
                            ") at index " + std::to_string(c) + "; pass check_finite=False to compute anyway");
    }
  }
  return beta;
}

/// MarginLoss's sampler by name.
inline caffe_mining::NegativeSampler parse_sampler(const std::string& name) {
  if (name == "DISTANCE_WEIGHTED") return caffe_mining::NegativeSampler::kDistanceWeighted;
  if (name == "UNIFORM") return caffe_mining::NegativeSampler::kUniform;
  throw py::value_error("sampler must be 'DISTANCE_WEIGHTED' or 'UNIFORM'. Got: '" + name + "'");
}

/// MarginOptions from the bindings' keywords.
inline caffe_mining::MarginOptions margin_options(double margin, double beta_init, double nu, int num_classes,
                                                  int negatives_per_positive, const std::string& sampler,
                                                  double cutoff, double nonzero_loss_cutoff, double eps,
                                                  uint64_t seed) {
  caffe_mining::MarginOptions options;
  options.margin = margin;
  options.beta_init = beta_init;
  options.nu = nu;
  options.num_classes = num_classes;
  options.negatives_per_positive = negatives_per_positive;
  options.sampler = parse_sampler(sampler);
  options.cutoff = cutoff;
  options.nonzero_loss_cutoff = nonzero_loss_cutoff;
  options.eps = eps;
  options.seed = seed;
  return options;
}

/// The capacity of a batch's triplet buffers, or a ValueError when it exceeds int sizes.
template <typename T>
int margin_capacity(const CArray<T>& labels, int n, const caffe_mining::MarginOptions& options) {
  const long long capacity = caffe_mining::margin_triplet_capacity(labels.data(), n, options);
  if (capacity < 0) throw py::value_error("the batch has too many (anchor, positive, draw) triplets for int sizes");
  return static_cast<int>(capacity);
}

}  // namespace caffe_mining_bindings

#endif  // CAFFE_MINING_PYTHON_BINDING_CHECKS_HPP_
