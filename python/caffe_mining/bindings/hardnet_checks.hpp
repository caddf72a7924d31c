// HardNetLoss's argument checks, shared by its CPU and CUDA bindings (hardnet.cpp, hardnet_cuda.cpp).
#ifndef CAFFE_MINING_PYTHON_BINDINGS_HARDNET_CHECKS_HPP_
#define CAFFE_MINING_PYTHON_BINDINGS_HARDNET_CHECKS_HPP_

#include <cctype>
#include <string>

#include "_binding_checks.hpp"
#include "caffe_mining/hardnet.hpp"

namespace caffe_mining_bindings {

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

}  // namespace caffe_mining_bindings

#endif  // CAFFE_MINING_PYTHON_BINDINGS_HARDNET_CHECKS_HPP_
