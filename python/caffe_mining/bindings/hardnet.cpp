// caffe_mining._core's HardNetLoss (CPU path): hardnet_loss, hardnet_options_problem, hardnet_cpu_lanes.
// It only binds (checks, array conversion, the core's buffers, the core's calls); the array rules are _core.cpp's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "_core.hpp"
#include "bindings/hardnet_checks.hpp"
#include "bindings/registry.hpp"
#include "caffe_mining/hardnet.hpp"

namespace py = pybind11;

namespace {

using caffe_mining_bindings::CArray;
using caffe_mining_bindings::dense_class_ids;
using caffe_mining_bindings::FeatureShape;
using caffe_mining_bindings::raise_if;
using namespace caffe_mining_bindings::host;  // as_array, feature_shape, is_float32, new_like...

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

}  // namespace

CAFFE_MINING_BINDINGS(hardnet) {
  m.def("hardnet_cpu_lanes", &caffe_mining::hardnet_cpu_lanes,
        "Lanes of the CPU's float row scan of HardNet (8: AVX2, 4: SSE2; CAFFE_MINING_CPU_LANES=sse2 forces 4).");
  m.def("hardnet_options_problem", &hardnet_options_problem_py, py::kw_only(), py::arg("margin") = 1.0,
        py::arg("anchor_swap") = false, py::arg("batch_reduce") = "MIN", py::arg("loss_type") = "TRIPLET_MARGIN",
        py::arg("eps") = 1e-6, py::arg("duplicate_threshold") = 0.008, py::arg("dtype") = "float64",
        R"doc(Why these hardnet_loss_param values cannot be used in ``dtype`` ('float32' | 'float64'), or '' when they
can: the core's check, the one the HardNetLoss layer and hardnet_loss make (ValueError for an unknown enum name).)doc");

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
}
