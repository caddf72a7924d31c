// caffe_mining._core_cuda's MiningContrastiveLoss (CUDA path): mining_contrastive_loss on device arrays.
// It only binds (device arrays, checks, the core's buffers, the core's calls); the array rules are _core_cuda.cpp's.
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <string>

#include "_core_cuda.hpp"
#include "bindings/contrastive_checks.hpp"
#include "bindings/registry.hpp"
#include "caffe_mining/contrastive_mining.hpp"

namespace py = pybind11;
namespace checks = caffe_mining_bindings;

namespace {

using checks::FeatureShape;
using checks::Shape;
using namespace caffe_mining_bindings::device;  // DeviceInput, DeviceArray, context_for, Carver, value_at...

template <typename T>
py::tuple contrastive(const DeviceInput& feat, const DeviceInput& feat_p, const py::object& sim_in,
                      const caffe_mining::ContrastiveOptions& options, double loss_weight, bool backward,
                      bool check_finite) {
  const FeatureShape shape = checks::feature_shape(feat.shape, "feat");
  const int n = shape.n, dim = shape.dim;
  DeviceContext& ctx = context_for(feat.device);
  wait_for_producer(ctx, feat);
  wait_for_producer(ctx, feat_p);

  const std::size_t rows = static_cast<std::size_t>(n);
  // Two passes: the first sizes the scratch, the second carves it.
  struct Pieces {
    T* diff;
    T* dist_sq;
    int* picked;
    T* loss;
    T* sim;
    int* first_invalid;
    unsigned long long* flag;
    void* workspace;
  } p{};
  auto carve = [&](char* base) {
    Carver carver(base);
    p.diff = carver.take<T>(rows * dim);
    p.dist_sq = carver.take<T>(rows);
    p.picked = carver.take<int>(rows);
    p.loss = carver.take<T>(1);
    p.sim = carver.take<T>(rows);
    p.first_invalid = carver.take<int>(1);
    p.flag = carver.take<unsigned long long>(1);
    p.workspace =
        carver.take<char>(caffe_mining::contrastive_workspace_bytes(n, options, caffe_mining::Device::kGpu));
    return carver.bytes();
  };
  carve(static_cast<char*>(ctx.reserve(carve(nullptr))));

  checks::raise_if(options.validate<T>());
  bool sim_on_device = false;
  const T* sim_data = device_rows<T>(ctx, sim_in, "sim", n, p.sim, &sim_on_device, [&](const py::object& host) {
    return checks::per_row_values<T>(host, "sim", n);
  });
  const T* a = static_cast<const T*>(feat.data);
  const T* b = static_cast<const T*>(feat_p.data);
  if (check_finite) {
    check_finite_features(ctx, a, n, dim, "feat", p.flag);
    check_finite_features(ctx, b, n, dim, "feat_p", p.flag);
  }
  caffe_mining::find_invalid_label_gpu(ctx.core(), sim_data, n, p.first_invalid);
  check_cuda(cudaGetLastError(), "find_invalid_label_gpu");
  const int invalid = value_at(ctx, p.first_invalid, 0);
  if (invalid < n) checks::throw_invalid_sim(invalid, value_at(ctx, sim_data, invalid));

  DeviceArray cost({static_cast<py::ssize_t>(n)}, typestr_of<T>(), feat.device);
  DeviceArray picked({static_cast<py::ssize_t>(n)}, "|b1", feat.device);
  py::object grad_feat = py::none(), grad_feat_p = py::none();
  T* grad_a = nullptr;
  T* grad_b = nullptr;
  if (backward) {
    DeviceArray ga = new_like<T>(feat.shape, feat.device), gb = new_like<T>(feat.shape, feat.device);
    grad_a = static_cast<T*>(ga.data());
    grad_b = static_cast<T*>(gb.data());
    grad_feat = py::cast(std::move(ga));
    grad_feat_p = py::cast(std::move(gb));
  }
  const caffe_mining::ContrastivePairs<T> pairs = {p.diff, p.dist_sq, static_cast<T*>(cost.data()), p.picked};
  caffe_mining::contrastive_forward_gpu<T>(ctx.core(), n, dim, a, b, sim_data, options, pairs, p.workspace, p.loss);
  check_cuda(cudaGetLastError(), "contrastive_forward_gpu");
  if (backward) {
    caffe_mining::contrastive_backward_gpu<T>(ctx.core(), n, dim, sim_data, options, pairs, T(loss_weight),
                                              p.workspace, grad_a, grad_b);
    check_cuda(cudaGetLastError(), "contrastive_backward_gpu");
  }
  checks::int_to_bool(p.picked, static_cast<bool*>(picked.data()), n, ctx.stream);
  const T loss = value_at(ctx, p.loss, 0);
  finish(ctx, "mining_contrastive_loss");
  return py::make_tuple(static_cast<double>(loss), grad_feat, grad_feat_p, std::move(picked), std::move(cost));
}

py::tuple mining_contrastive_loss(const py::object& feat_in, const py::object& feat_p_in, const py::object& sim,
                                  double margin, bool legacy_version, int mining_ratio, double loss_weight,
                                  bool backward, bool check_finite) {
  const DeviceInput feat = read_feature(feat_in, "feat", "feat");
  const DeviceInput feat_p = read_feature(feat_p_in, "feat_p", "feat");
  const caffe_mining::ContrastiveOptions options = checks::contrastive_options(margin, legacy_version, mining_ratio);
  checks::raise_if(options.validate<double>());
  checks::raise_if(caffe_mining::option_finite_problem<double>("loss_weight", loss_weight));
  checks::feature_shape(feat.shape, "feat");
  const bool single = checks::is_float32(feat.dtype, "feat");
  checks::check_same(feat.dtype, feat.shape, "feat", feat_p.dtype, feat_p.shape, "feat_p");
  if (feat_p.device != feat.device) throw py::value_error("feat_p must be on the device of feat");
  DeviceGuard guard(feat.device);
  if (single) return contrastive<float>(feat, feat_p, sim, options, loss_weight, backward, check_finite);
  return contrastive<double>(feat, feat_p, sim, options, loss_weight, backward, check_finite);
}

}  // namespace

CAFFE_MINING_BINDINGS(contrastive) {
  m.def("mining_contrastive_loss", &mining_contrastive_loss, py::arg("feat"), py::arg("feat_p"), py::arg("sim"),
        py::kw_only(), py::arg("margin") = 1.0, py::arg("legacy_version") = false, py::arg("mining_ratio") = 1,
        py::arg("loss_weight") = 1.0, py::arg("backward") = true, py::arg("check_finite") = true,
        "MiningContrastiveLoss on the CUDA core: _core.mining_contrastive_loss on device arrays; the arrays it "
        "returns are DeviceArray objects.");
}
