// caffe_mining._core's MarginLoss (CPU path): margin_loss, margin_options_problem.
// It only binds (checks, array conversion, the core's buffers, the core's calls); the array rules are _core.cpp's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "_core.hpp"
#include "bindings/margin_checks.hpp"
#include "bindings/registry.hpp"
#include "caffe_mining/margin.hpp"

namespace py = pybind11;

namespace {

using caffe_mining_bindings::CArray;
using caffe_mining_bindings::FeatureShape;
using caffe_mining_bindings::raise_if;
using namespace caffe_mining_bindings::host;  // as_array, feature_shape, is_float32, new_like...

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

}  // namespace

CAFFE_MINING_BINDINGS(margin) {
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
}
