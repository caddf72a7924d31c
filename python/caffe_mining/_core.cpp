// caffe_mining._core: Python bindings of the Caffe-free core (caffe_layers/src/caffe/mining/*.cpp, CPU path).
//
// This file only binds: it checks arguments, converts arrays, allocates the core's buffers and calls the core.
// The math lives in the core, the same code the Caffe layers run.
//
// Array rules (the same for every function):
//   - features: arrays (or array-likes such as nested lists, converted by NumPy) of float32 or float64,
//     shape (N, D) or Caffe's (N, D, 1, 1); the dtype selects the core's Dtype
//     (float32 stays float32, never upcast); the second feature array must have the same dtype and shape.
//     Other dtypes raise TypeError.
//   - any memory layout: non-C-contiguous arrays are copied to a C-contiguous buffer first.
//   - labels / uniforms: any real array with N elements, converted to the features' dtype.
//   - non-finite features raise ValueError unless check_finite=False (then NaN propagates as the core defines:
//     a NaN contrastive pair is the hardest of its kind and makes the loss NaN).
//   - gradients come back in the features' shape and dtype.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <memory>
#include <vector>

#include "caffe_mining/contrastive_mining.hpp"
#include "caffe_mining/hardnet.hpp"
#include "caffe_mining/margin.hpp"
#include "caffe_mining/triplet.hpp"
#include "_binding_checks.hpp"

namespace py = pybind11;

namespace {

// The argument checks and their messages are shared with the GPU bindings (_core_cuda.cpp): _binding_checks.hpp.
using caffe_mining_bindings::CArray;
using caffe_mining_bindings::dense_class_ids;
using caffe_mining_bindings::FeatureShape;
using caffe_mining_bindings::per_row_values;
using caffe_mining_bindings::raise_if;
using caffe_mining_bindings::triplet_class_ids;
using caffe_mining_bindings::triplet_options;

/// Any array-like as a NumPy array (lists and scalars too); TypeError when NumPy cannot make one.
py::array as_array(const py::object& x, const char* name) {
  py::array converted = x.is_none() ? py::array() : py::array::ensure(x);
  if (x.is_none() || !converted) {
    throw py::type_error(std::string(name) + " must be a float32 or float64 array. Got: " +
                         py::repr(x).cast<std::string>());
  }
  return converted;
}

caffe_mining_bindings::Shape shape_of(const py::array& x) {
  return caffe_mining_bindings::Shape(x.shape(), x.shape() + x.ndim());
}

std::string dtype_name(const py::array& x) { return py::str(x.dtype()).cast<std::string>(); }

/// N and D of a feature array: (N, D) or (N, D, 1, 1).
FeatureShape feature_shape(const py::array& x, const char* name) {
  return caffe_mining_bindings::feature_shape(shape_of(x), name);
}

/// Whether the features are float32 (true) or float64 (false); anything else is a TypeError.
bool is_float32(const py::array& x, const char* name) {
  return caffe_mining_bindings::is_float32(dtype_name(x), name);
}

/// The second feature array: same dtype and shape as the first.
void check_same(const py::array& first, const char* first_name, const py::array& second, const char* second_name) {
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

// ---------------------------------------------------------------------------------------------------------------
// MiningContrastiveLoss

template <typename T>
py::tuple contrastive(const py::array& feat_in, const py::array& feat_p_in, const py::object& sim_in,
                      const caffe_mining::ContrastiveOptions& options, double loss_weight, bool backward,
                      bool check_finite) {
  const FeatureShape shape = feature_shape(feat_in, "feat");
  const int n = shape.n, dim = shape.dim;
  const CArray<T> feat = CArray<T>::ensure(feat_in);
  const CArray<T> feat_p = CArray<T>::ensure(feat_p_in);
  raise_if(options.validate<T>());
  const CArray<T> sim = per_row_values<T>(sim_in, "sim", n);
  if (check_finite) {
    check_finite_values(feat, "feat", dim);
    check_finite_values(feat_p, "feat_p", dim);
  }
  const int invalid = caffe_mining::find_invalid_label_cpu(sim.data(), n);
  if (invalid >= 0) caffe_mining_bindings::throw_invalid_sim(invalid, sim.data()[invalid]);

  std::vector<T> diff(static_cast<size_t>(n) * dim), dist_sq(n);
  py::array_t<T> cost(n);
  std::vector<int> picked(n);
  std::vector<uint64_t> workspace(
      caffe_mining::contrastive_workspace_bytes(n, options, caffe_mining::Device::kCpu) / sizeof(uint64_t) + 1);
  py::object grad_feat = py::none(), grad_feat_p = py::none();
  py::array_t<T> grad_a, grad_b;
  if (backward) {
    grad_a = new_like<T>(feat_in);
    grad_b = new_like<T>(feat_in);
    grad_feat = grad_a;
    grad_feat_p = grad_b;
  }
  T loss;
  {
    const caffe_mining::ContrastivePairs<T> pairs = {diff.data(), dist_sq.data(), cost.mutable_data(),
                                                     picked.data()};
    T* grad_a_data = backward ? grad_a.mutable_data() : nullptr;
    T* grad_b_data = backward ? grad_b.mutable_data() : nullptr;
    py::gil_scoped_release release;
    caffe_mining::contrastive_forward_cpu<T>(n, dim, feat.data(), feat_p.data(), sim.data(), options, pairs,
                                             workspace.data(), &loss);
    if (backward) {
      caffe_mining::contrastive_backward_cpu<T>(n, dim, sim.data(), options, pairs, T(loss_weight),
                                                workspace.data(), grad_a_data, grad_b_data);
    }
  }
  py::array_t<bool> picked_mask(n);
  for (int i = 0; i < n; ++i) picked_mask.mutable_data()[i] = picked[i] != 0;
  return py::make_tuple(static_cast<double>(loss), grad_feat, grad_feat_p, picked_mask, cost);
}

py::tuple mining_contrastive_loss(const py::object& feat_in, const py::object& feat_p_in, const py::object& sim,
                                  double margin, bool legacy_version, int mining_ratio, double loss_weight,
                                  bool backward, bool check_finite) {
  const py::array feat = as_array(feat_in, "feat");
  const py::array feat_p = as_array(feat_p_in, "feat_p");
  const caffe_mining::ContrastiveOptions options =
      caffe_mining_bindings::contrastive_options(margin, legacy_version, mining_ratio);
  raise_if(options.validate<double>());
  raise_if(caffe_mining::option_finite_problem<double>("loss_weight", loss_weight));
  feature_shape(feat, "feat");
  const bool single = is_float32(feat, "feat");
  check_same(feat, "feat", feat_p, "feat_p");
  if (single) return contrastive<float>(feat, feat_p, sim, options, loss_weight, backward, check_finite);
  return contrastive<double>(feat, feat_p, sim, options, loss_weight, backward, check_finite);
}

// ---------------------------------------------------------------------------------------------------------------
// HardNetLoss

void check_dtype_name(const std::string& dtype) {
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

template <typename T>
py::tuple hardnet(const py::array& anchor_in, const py::array& positive_in, const py::object& labels_in,
                  const caffe_mining::HardNetOptions& options, const py::object& uniforms_in, double loss_weight,
                  bool backward, bool check_finite) {
  const FeatureShape shape = feature_shape(anchor_in, "anchor");
  const int n = shape.n, dim = shape.dim;
  caffe_mining_bindings::check_hardnet_rows(n);
  const CArray<T> anchor = CArray<T>::ensure(anchor_in);
  const CArray<T> positive = CArray<T>::ensure(positive_in);
  if (check_finite) {
    check_finite_values(anchor, "anchor", dim);
    check_finite_values(positive, "positive", dim);
  }
  // Default-constructed arrays are empty, not null: whether a buffer is given is tracked by has_*.
  CArray<T> labels, uniforms;
  const bool has_labels = !labels_in.is_none();
  const bool has_uniforms = options.batch_reduce == caffe_mining::HardNetBatchReduce::kRandom;
  raise_if(options.validate<T>());
  if (has_labels) labels = dense_class_ids<T>(labels_in, n);
  if (has_uniforms) {
    if (uniforms_in.is_none()) caffe_mining_bindings::throw_missing_uniforms();
    // Checked as given: a value just below 1 may round to 1 in float32, which the core takes as its last rank.
    uniforms = caffe_mining_bindings::host_uniforms<T>(uniforms_in, n);
  }

  const size_t nn = static_cast<size_t>(n);
  std::vector<T> dist(nn * nn), row_loss(n), dloss_dpos(n), dloss_dneg(n);
  std::vector<T> scratch(caffe_mining::hardnet_workspace_bytes<T>(n, options, caffe_mining::Device::kCpu) / sizeof(T));
  std::vector<int> neg_index(n), neg_swapped(n), neg_count(n), valid_rows(1);
  py::array_t<T> pos_dist(n), neg_dist(n);
  caffe_mining::HardNetMining<T> mining;
  mining.dist = dist.data();
  mining.pos_dist = pos_dist.mutable_data();
  mining.neg_dist = neg_dist.mutable_data();
  mining.neg_index = neg_index.data();
  mining.neg_swapped = neg_swapped.data();
  mining.neg_count = neg_count.data();
  mining.row_loss = row_loss.data();
  mining.dloss_dpos = dloss_dpos.data();
  mining.dloss_dneg = dloss_dneg.data();
  mining.valid_rows = valid_rows.data();

  py::object grad_anchor = py::none(), grad_positive = py::none();
  py::array_t<T> grad_a, grad_p;
  if (backward) {
    grad_a = new_like<T>(anchor_in);
    grad_p = new_like<T>(anchor_in);
    grad_anchor = grad_a;
    grad_positive = grad_p;
  }
  T loss;
  {
    const T* labels_data = has_labels ? labels.data() : nullptr;
    const T* uniforms_data = has_uniforms ? uniforms.data() : nullptr;
    T* grad_a_data = backward ? grad_a.mutable_data() : nullptr;
    T* grad_p_data = backward ? grad_p.mutable_data() : nullptr;
    py::gil_scoped_release release;
    caffe_mining::hardnet_forward_cpu<T>(n, dim, anchor.data(), positive.data(), labels_data, uniforms_data, options,
                                         mining, scratch.data(), &loss);
    if (backward) {
      caffe_mining::hardnet_backward_cpu<T>(n, dim, anchor.data(), positive.data(), labels_data, options, mining,
                                            T(loss_weight), scratch.data(), grad_a_data, grad_p_data);
    }
  }
  py::array_t<int64_t> index_out(n), count_out(n);
  py::array_t<bool> swapped_out(n);
  for (int i = 0; i < n; ++i) {
    index_out.mutable_data()[i] = neg_index[i];
    count_out.mutable_data()[i] = neg_count[i];
    swapped_out.mutable_data()[i] = neg_swapped[i] != 0;
  }
  return py::make_tuple(static_cast<double>(loss), grad_anchor, grad_positive, index_out, swapped_out, count_out,
                        pos_dist, neg_dist);
}

py::tuple hardnet_loss(const py::object& anchor_in, const py::object& positive_in, const py::object& labels,
                       double margin, bool anchor_swap, const std::string& batch_reduce, const std::string& loss_type,
                       double eps, double duplicate_threshold, const py::object& uniforms, double loss_weight,
                       bool backward, bool check_finite) {
  const py::array anchor = as_array(anchor_in, "anchor");
  const py::array positive = as_array(positive_in, "positive");
  raise_if(caffe_mining::option_finite_problem<double>("loss_weight", loss_weight));
  const caffe_mining::HardNetOptions options = caffe_mining_bindings::hardnet_options(
      margin, anchor_swap, batch_reduce, loss_type, eps, duplicate_threshold);
  raise_if(options.validate<double>());
  feature_shape(anchor, "anchor");
  const bool single = is_float32(anchor, "anchor");
  check_same(anchor, "anchor", positive, "positive");
  if (single) {
    return hardnet<float>(anchor, positive, labels, options, uniforms, loss_weight, backward, check_finite);
  }
  return hardnet<double>(anchor, positive, labels, options, uniforms, loss_weight, backward, check_finite);
}

std::string hardnet_options_problem_py(double margin, bool anchor_swap, const std::string& batch_reduce,
                                       const std::string& loss_type, double eps, double duplicate_threshold,
                                       const std::string& dtype) {
  return options_problem(caffe_mining_bindings::hardnet_options(margin, anchor_swap, batch_reduce, loss_type, eps,
                                                               duplicate_threshold),
                         dtype);
}

std::string contrastive_options_problem_py(double margin, int mining_ratio, const std::string& dtype) {
  return options_problem(caffe_mining_bindings::contrastive_options(margin, false, mining_ratio), dtype);
}

// ---------------------------------------------------------------------------------------------------------------
// MarginLoss

std::string margin_options_problem_py(double margin, double beta_init, double nu, int num_classes,
                                      int negatives_per_positive, const std::string& sampler, double cutoff,
                                      double nonzero_loss_cutoff, double eps, uint64_t seed,
                                      const std::string& dtype) {
  check_dtype_name(dtype);
  const caffe_mining::MarginOptions options = caffe_mining_bindings::margin_options(
      margin, beta_init, nu, num_classes, negatives_per_positive, sampler, cutoff, nonzero_loss_cutoff, eps, seed);
  return dtype == "float32" ? options.validate<float>() : options.validate<double>();
}

template <typename T>
py::tuple margin(const py::array& embedding_in, const py::object& labels_in, const py::object& beta_in,
                 const caffe_mining::MarginOptions& options, uint64_t iteration, double loss_weight, bool backward,
                 bool check_finite) {
  const FeatureShape shape = feature_shape(embedding_in, "embedding");
  const int n = shape.n, dim = shape.dim;
  raise_if(options.validate<T>());
  const CArray<T> embedding = CArray<T>::ensure(embedding_in);
  if (check_finite) check_finite_values(embedding, "embedding", dim);
  const CArray<T> labels = caffe_mining_bindings::margin_labels<T>(labels_in, n, options.num_classes);
  const int betas = options.num_classes > 0 ? options.num_classes : 1;
  const CArray<T> beta = caffe_mining_bindings::margin_beta<T>(beta_in, betas, options.beta_init, check_finite);
  const int capacity = caffe_mining_bindings::margin_capacity(labels, n, options);
  const std::size_t slots = static_cast<std::size_t>(capacity > 0 ? capacity : 1);
  std::vector<int> triplets(3 * slots), anchor_count(n), anchor_offset(n), counts(2);
  std::vector<T> pos_dist(slots), neg_dist(slots);
  const std::size_t workspace_bytes = caffe_mining::margin_workspace_bytes<T>(n, options, caffe_mining::Device::kCpu);
  // Not zeroed (the core writes every byte it reads): n x n values of page-touching memset saved per call.
  const std::unique_ptr<uint64_t[]> workspace(new uint64_t[workspace_bytes / sizeof(uint64_t) + 1]);
  caffe_mining::MarginMining<T> mining;
  mining.triplets = triplets.data();
  mining.pos_dist = pos_dist.data();
  mining.neg_dist = neg_dist.data();
  mining.anchor_count = anchor_count.data();
  mining.anchor_offset = anchor_offset.data();
  mining.counts = counts.data();

  py::object grad_embedding = py::none(), grad_beta = py::none();
  py::array_t<T> grad_x, grad_b;
  if (backward) {
    grad_x = new_like<T>(embedding_in);
    grad_b = py::array_t<T>(betas);
    grad_embedding = grad_x;
    grad_beta = grad_b;
  }
  T loss;
  {
    T* grad_x_data = backward ? grad_x.mutable_data() : nullptr;
    T* grad_b_data = backward ? grad_b.mutable_data() : nullptr;
    py::gil_scoped_release release;
    caffe_mining::margin_forward_cpu<T>(n, dim, embedding.data(), labels.data(), beta.data(), options, iteration,
                                        capacity, mining, workspace.get(), &loss);
    if (backward) {
      caffe_mining::margin_backward_cpu<T>(n, dim, embedding.data(), labels.data(), beta.data(), options, mining,
                                           T(loss_weight), workspace.get(), grad_x_data, grad_b_data);
    }
  }
  const int count = counts[0] > 0 ? counts[0] : 0;
  py::array_t<int64_t> triplets_out(std::vector<py::ssize_t>{count, 3});
  py::array_t<T> pos_out(count), neg_out(count);
  for (int t = 0; t < count; ++t) {
    for (int k = 0; k < 3; ++k) triplets_out.mutable_data()[3 * t + k] = triplets[3 * static_cast<std::size_t>(t) + k];
    pos_out.mutable_data()[t] = pos_dist[t];
    neg_out.mutable_data()[t] = neg_dist[t];
  }
  return py::make_tuple(static_cast<double>(loss), grad_embedding, grad_beta, triplets_out, pos_out, neg_out,
                        counts[1]);
}

py::tuple margin_loss(const py::object& embedding_in, const py::object& labels, const py::object& beta,
                      double margin_value, double beta_init, double nu, int num_classes, int negatives_per_positive,
                      const std::string& sampler, double cutoff, double nonzero_loss_cutoff, double eps,
                      uint64_t seed, uint64_t iteration, double loss_weight, bool backward, bool check_finite) {
  const py::array embedding = as_array(embedding_in, "embedding");
  raise_if(caffe_mining::option_finite_problem<double>("loss_weight", loss_weight));
  const caffe_mining::MarginOptions options = caffe_mining_bindings::margin_options(
      margin_value, beta_init, nu, num_classes, negatives_per_positive, sampler, cutoff, nonzero_loss_cutoff, eps,
      seed);
  raise_if(options.validate<double>());
  feature_shape(embedding, "embedding");
  if (is_float32(embedding, "embedding")) {
    return margin<float>(embedding, labels, beta, options, iteration, loss_weight, backward, check_finite);
  }
  return margin<double>(embedding, labels, beta, options, iteration, loss_weight, backward, check_finite);
}

// ---------------------------------------------------------------------------------------------------------------
// TripletLoss

std::string triplet_options_problem_py(double margin, bool soft_margin, bool squared, const std::string& mining,
                                       double eps, const std::string& dtype) {
  check_dtype_name(dtype);
  const caffe_mining::TripletOptions options = triplet_options(margin, soft_margin, squared, mining, eps);
  return dtype == "float32" ? options.validate<float>() : options.validate<double>();
}

template <typename T>
py::tuple triplet(const py::array& embedding_in, const py::object& labels_in,
                  const caffe_mining::TripletOptions& options, double loss_weight, bool backward, bool check_finite) {
  const FeatureShape shape = feature_shape(embedding_in, "embedding");
  const int n = shape.n, dim = shape.dim;
  caffe_mining_bindings::check_triplet_rows(n);
  const CArray<T> embedding = CArray<T>::ensure(embedding_in);
  if (check_finite) check_finite_values(embedding, "embedding", dim);
  raise_if(options.validate<T>());
  const CArray<T> labels = triplet_class_ids<T>(labels_in, n);

  const size_t nn = static_cast<size_t>(n);
  const bool hard = options.mining == caffe_mining::TripletMiner::kBatchHard;
  const bool semi = options.mining == caffe_mining::TripletMiner::kSemiHard;
  std::vector<T> dist(nn * nn), weight(nn * nn), row_loss(n);
  std::vector<T> scratch(caffe_mining::triplet_workspace_bytes<T>(n, options, caffe_mining::Device::kCpu) / sizeof(T));
  std::vector<int> positive(hard ? n : 0), negative(hard ? n : 0), pair_negative(semi ? nn * nn : 0);
  std::vector<long long> row_terms(n), terms(1);
  caffe_mining::TripletMining<T> mining;
  mining.dist = dist.data();
  mining.weight = weight.data();
  mining.positive = hard ? positive.data() : nullptr;
  mining.negative = hard ? negative.data() : nullptr;
  mining.pair_negative = semi ? pair_negative.data() : nullptr;
  mining.row_loss = row_loss.data();
  mining.row_terms = row_terms.data();
  mining.terms = terms.data();

  py::object grad_embedding = py::none();
  py::array_t<T> grad;
  if (backward) {
    grad = new_like<T>(embedding_in);
    grad_embedding = grad;
  }
  T loss;
  {
    T* grad_data = backward ? grad.mutable_data() : nullptr;
    py::gil_scoped_release release;
    caffe_mining::triplet_forward_cpu<T>(n, dim, embedding.data(), labels.data(), options, mining, scratch.data(),
                                         &loss);
    if (backward) {
      caffe_mining::triplet_backward_cpu<T>(n, dim, embedding.data(), options, mining, T(loss_weight),
                                            scratch.data(), grad_data);
    }
  }
  const std::vector<int64_t> rows = caffe_mining_bindings::triplet_rows(
      options.mining, n, labels.data(), positive.data(), negative.data(), pair_negative.data());
  py::array_t<int64_t> triplets({static_cast<py::ssize_t>(rows.size() / 3), static_cast<py::ssize_t>(3)});
  std::copy(rows.begin(), rows.end(), triplets.mutable_data());
  return py::make_tuple(static_cast<double>(loss), grad_embedding, triplets, static_cast<long long>(terms[0]));
}

py::tuple triplet_loss(const py::object& embedding_in, const py::object& labels, double margin, bool soft_margin,
                       bool squared, const std::string& mining, double eps, double loss_weight, bool backward,
                       bool check_finite) {
  const py::array embedding = as_array(embedding_in, "embedding");
  raise_if(caffe_mining::option_finite_problem<double>("loss_weight", loss_weight));
  const caffe_mining::TripletOptions options = triplet_options(margin, soft_margin, squared, mining, eps);
  raise_if(options.validate<double>());
  feature_shape(embedding, "embedding");
  if (is_float32(embedding, "embedding")) {
    return triplet<float>(embedding, labels, options, loss_weight, backward, check_finite);
  }
  return triplet<double>(embedding, labels, options, loss_weight, backward, check_finite);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "Bindings of the Caffe-free caffe-mining core (CPU path): the math the Caffe layers run.";

  m.def("mining_contrastive_loss", &mining_contrastive_loss, py::arg("feat"), py::arg("feat_p"), py::arg("sim"),
        py::kw_only(), py::arg("margin") = 1.0, py::arg("legacy_version") = false, py::arg("mining_ratio") = 1,
        py::arg("loss_weight") = 1.0, py::arg("backward") = true, py::arg("check_finite") = true,
        R"doc(MiningContrastiveLoss forward (and backward) on the CPU core.

Args:
    feat, feat_p: float32 or float64, (N, D) or (N, D, 1, 1), same dtype and shape.
    sim: N values, 1 = similar pair, 0 = dissimilar pair (anything else raises ValueError).
    margin, legacy_version, mining_ratio: as contrastive_loss_param (mining_ratio >= 1).
    loss_weight: the top's diff, scales the gradients.
    backward: also compute the gradients.  check_finite: raise ValueError on NaN/inf features.

Returns:
    (loss: float, grad_feat, grad_feat_p (like feat, or None), picked: (N,) bool, cost: (N,) feat's dtype).
)doc");

  m.def("hardnet_cpu_lanes", &caffe_mining::hardnet_cpu_lanes,
        "Lanes of the CPU's float row scan of HardNet (8: AVX2, 4: SSE2; CAFFE_MINING_CPU_LANES=sse2 forces 4).");
  m.def("hardnet_options_problem", &hardnet_options_problem_py, py::kw_only(), py::arg("margin") = 1.0,
        py::arg("anchor_swap") = false, py::arg("batch_reduce") = "MIN", py::arg("loss_type") = "TRIPLET_MARGIN",
        py::arg("eps") = 1e-6, py::arg("duplicate_threshold") = 0.008, py::arg("dtype") = "float64",
        R"doc(Why these hardnet_loss_param values cannot be used in ``dtype`` ('float32' | 'float64'), or '' when they
can: the core's check, the one the HardNetLoss layer and hardnet_loss make (ValueError for an unknown enum name).)doc");

  m.def("contrastive_options_problem", &contrastive_options_problem_py, py::kw_only(), py::arg("margin") = 1.0,
        py::arg("mining_ratio") = 1, py::arg("dtype") = "float64",
        R"doc(Why these contrastive_loss_param values cannot be used in ``dtype``, or '' when they can: the core's
check, the one the MiningContrastiveLoss layer and mining_contrastive_loss make.)doc");

  m.def("hardnet_loss", &hardnet_loss, py::arg("anchor"), py::arg("positive"), py::arg("labels") = py::none(),
        py::kw_only(), py::arg("margin") = 1.0, py::arg("anchor_swap") = false, py::arg("batch_reduce") = "MIN",
        py::arg("loss_type") = "TRIPLET_MARGIN", py::arg("eps") = 1e-6, py::arg("duplicate_threshold") = 0.008,
        py::arg("uniforms") = py::none(), py::arg("loss_weight") = 1.0, py::arg("backward") = true,
        py::arg("check_finite") = true,
        R"doc(HardNetLoss forward (and backward) on the CPU core.

Args:
    anchor, positive: float32 or float64, (N, D) or (N, D, 1, 1), same dtype and shape, N >= 2.
    labels: None or N finite class ids of any integer or float dtype (only their equality matters).
    margin, anchor_swap, batch_reduce ('MIN' | 'AVERAGE' | 'RANDOM'), loss_type ('TRIPLET_MARGIN' | 'SOFTMAX' |
        'CONTRASTIVE'), eps, duplicate_threshold: as hardnet_loss_param.
    uniforms: N values in [0, 1), required for RANDOM (row i takes its floor(u_i * count_i)-th valid candidate).
    loss_weight: the top's diff, scales the gradients.
    backward: also compute the gradients.  check_finite: raise ValueError on NaN/inf features.

Returns:
    (loss: float, grad_anchor, grad_positive (like anchor, or None), neg_index: (N,) int64 (-1: no valid negative),
     neg_swapped: (N,) bool, neg_count: (N,) int64, pos_dist: (N,), neg_dist: (N,) in the features' dtype).
)doc");

  m.def("margin_options_problem", &margin_options_problem_py, py::kw_only(), py::arg("margin") = 0.2,
        py::arg("beta_init") = 1.2, py::arg("nu") = 0.0, py::arg("num_classes") = 0,
        py::arg("negatives_per_positive") = 1, py::arg("sampler") = "DISTANCE_WEIGHTED", py::arg("cutoff") = 0.5,
        py::arg("nonzero_loss_cutoff") = 1.4, py::arg("eps") = 1e-8, py::arg("seed") = 0,
        py::arg("dtype") = "float64",
        R"doc(Why these margin_loss_param values cannot be used in ``dtype`` ('float32' | 'float64'), or '' when they
can: the core's MarginOptions::validate, the check the MarginLoss layer and margin_loss make.)doc");

  m.def("margin_loss", &margin_loss, py::arg("embedding"), py::arg("labels"), py::arg("beta") = py::none(),
        py::kw_only(), py::arg("margin") = 0.2, py::arg("beta_init") = 1.2, py::arg("nu") = 0.0,
        py::arg("num_classes") = 0, py::arg("negatives_per_positive") = 1, py::arg("sampler") = "DISTANCE_WEIGHTED",
        py::arg("cutoff") = 0.5, py::arg("nonzero_loss_cutoff") = 1.4, py::arg("eps") = 1e-8, py::arg("seed") = 0,
        py::arg("iteration") = 0, py::arg("loss_weight") = 1.0, py::arg("backward") = true,
        py::arg("check_finite") = true,
        R"doc(MarginLoss forward (and backward) on the CPU core: distance-weighted sampling, then the margin loss.

Args:
    embedding: float32 or float64, (N, D) or (N, D, 1, 1); meant to be L2-normalised rows.
    labels: N integer class ids (in [0, num_classes) when num_classes > 0).
    beta: max(1, num_classes) values; None: every one beta_init.
    margin, beta_init, nu, num_classes, negatives_per_positive, sampler ('DISTANCE_WEIGHTED' | 'UNIFORM'),
        cutoff, nonzero_loss_cutoff, eps, seed: as margin_loss_param.
    iteration: the pass number the draws are keyed by (with seed).
    loss_weight: the top's diff, scales the gradients.
    backward: also compute the gradients.  check_finite: raise ValueError on NaN/inf embedding or beta.

Returns:
    (loss: float, grad_embedding (like embedding, or None), grad_beta ((B,), or None),
     triplets: (T, 3) int64 (anchor, positive, negative), pos_dist: (T,), neg_dist: (T,), hinge_count: int C).
)doc");

  m.def("triplet_options_problem", &triplet_options_problem_py, py::kw_only(), py::arg("margin") = 0.2,
        py::arg("soft_margin") = false, py::arg("squared") = false, py::arg("mining") = "BATCH_HARD",
        py::arg("eps") = 1e-12, py::arg("dtype") = "float64",
        R"doc(Why these triplet_loss_param values cannot be used in ``dtype`` ('float32' | 'float64'), or '' when they
can: the core's check, the one the TripletLoss layer and triplet_loss make (ValueError for an unknown mining name).)doc");

  m.def("triplet_loss", &triplet_loss, py::arg("embedding"), py::arg("labels"), py::kw_only(),
        py::arg("margin") = 0.2, py::arg("soft_margin") = false, py::arg("squared") = false,
        py::arg("mining") = "BATCH_HARD", py::arg("eps") = 1e-12, py::arg("loss_weight") = 1.0,
        py::arg("backward") = true, py::arg("check_finite") = true,
        R"doc(TripletLoss forward (and backward) on the CPU core.

Args:
    embedding: float32 or float64, (N, D) or (N, D, 1, 1).
    labels: N finite integer class ids, any real dtype (only their equality matters).
    margin, soft_margin, squared, mining ('BATCH_HARD' | 'BATCH_ALL' | 'SEMI_HARD'), eps: as triplet_loss_param.
    loss_weight: the top's diff, scales the gradient.
    backward: also compute the gradient.  check_finite: raise ValueError on NaN/inf features.

Returns:
    (loss: float, grad_embedding (like embedding, or None), triplets: (T, 3) int64 (anchor, positive, negative):
     BATCH_HARD one row per anchor, SEMI_HARD one per ordered positive pair, BATCH_ALL none; -1 where no triplet
     was mined, terms: int, the mean's denominator (BATCH_ALL: the terms with l > 0; -1 for non-finite input)).
)doc");
}
