// caffe_mining._core's TripletLoss (CPU path): triplet_loss, triplet_options_problem.
// It only binds (checks, array conversion, the core's buffers, the core's calls); the array rules are _core.cpp's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "_core.hpp"
#include "bindings/triplet_checks.hpp"
#include "bindings/registry.hpp"
#include "caffe_mining/triplet.hpp"

namespace py = pybind11;

namespace {

using caffe_mining_bindings::CArray;
using caffe_mining_bindings::FeatureShape;
using caffe_mining_bindings::raise_if;
using caffe_mining_bindings::triplet_class_ids;
using caffe_mining_bindings::triplet_options;
using namespace caffe_mining_bindings::host;  // as_array, feature_shape, is_float32, new_like...

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

CAFFE_MINING_BINDINGS(triplet) {
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
