// MarginLoss's argument checks, shared by its CPU and CUDA bindings (margin.cpp, margin_cuda.cpp).
#ifndef CAFFE_MINING_PYTHON_BINDINGS_MARGIN_CHECKS_HPP_
#define CAFFE_MINING_PYTHON_BINDINGS_MARGIN_CHECKS_HPP_

#include <cmath>
#include <cstdint>
#include <string>

#include "_binding_checks.hpp"
#include "caffe_mining/margin.hpp"

namespace caffe_mining_bindings {

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

#endif  // CAFFE_MINING_PYTHON_BINDINGS_MARGIN_CHECKS_HPP_
