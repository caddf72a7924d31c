// MiningContrastiveLoss's argument checks, shared by its CPU and CUDA bindings (contrastive.cpp,
// contrastive_cuda.cpp).
#ifndef CAFFE_MINING_PYTHON_BINDINGS_CONTRASTIVE_CHECKS_HPP_
#define CAFFE_MINING_PYTHON_BINDINGS_CONTRASTIVE_CHECKS_HPP_

#include <string>

#include "_binding_checks.hpp"
#include "caffe_mining/contrastive_mining.hpp"

namespace caffe_mining_bindings {

[[noreturn]] inline void throw_invalid_sim(int index, double value) {
  throw py::value_error("sim must hold 0 (dissimilar) or 1 (similar). Got: sim[" + std::to_string(index) + "] = " +
                        caffe_mining::format_value(value));
}

/// The contrastive options of the bindings' keywords.
inline caffe_mining::ContrastiveOptions contrastive_options(double margin, bool legacy_version, int mining_ratio) {
  caffe_mining::ContrastiveOptions options;
  options.margin = margin;
  options.legacy_version = legacy_version;
  options.mining_ratio = mining_ratio;
  return options;
}

}  // namespace caffe_mining_bindings

#endif  // CAFFE_MINING_PYTHON_BINDINGS_CONTRASTIVE_CHECKS_HPP_
