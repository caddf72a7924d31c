// caffe_mining._core's MiningContrastiveLoss (CPU path): mining_contrastive_loss, contrastive_options_problem.
// It only binds (checks, array conversion, the core's buffers, the core's calls); the array rules are _core.cpp's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "_core.hpp"
#include "bindings/contrastive_checks.hpp"
#include "bindings/registry.hpp"
#include "caffe_mining/contrastive_mining.hpp"

namespace py = pybind11;

namespace {

using caffe_mining_bindings::CArray;
using caffe_mining_bindings::FeatureShape;
using caffe_mining_bindings::per_row_values;
using caffe_mining_bindings::raise_if;
using namespace caffe_mining_bindings::host;  // as_array, feature_shape, is_float32, new_like...

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

std::string contrastive_options_problem_py(double margin, int mining_ratio, const std::string& dtype) {
  return options_problem(caffe_mining_bindings::contrastive_options(margin, false, mining_ratio), dtype);
}

}  // namespace

CAFFE_MINING_BINDINGS(contrastive) {
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

  m.def("contrastive_options_problem", &contrastive_options_problem_py, py::kw_only(), py::arg("margin") = 1.0,
        py::arg("mining_ratio") = 1, py::arg("dtype") = "float64",
        R"doc(Why these contrastive_loss_param values cannot be used in ``dtype``, or '' when they can: the core's
check, the one the MiningContrastiveLoss layer and mining_contrastive_loss make.)doc");
}
