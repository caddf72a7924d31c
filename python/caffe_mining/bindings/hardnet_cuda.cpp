// caffe_mining._core_cuda's HardNetLoss (CUDA path): hardnet_loss on device arrays.
// It only binds (device arrays, checks, the core's buffers, the core's calls); the array rules are _core_cuda.cpp's.
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "_core_cuda.hpp"
#include "bindings/hardnet_checks.hpp"
#include "bindings/registry.hpp"
#include "caffe_mining/hardnet.hpp"

namespace py = pybind11;
namespace checks = caffe_mining_bindings;

namespace {

using checks::FeatureShape;
using checks::Shape;
using namespace caffe_mining_bindings::device;  // DeviceInput, DeviceArray, context_for, Carver, value_at...

template <typename T>
py::tuple hardnet(const DeviceInput& anchor, const DeviceInput& positive, const py::object& labels_in,
                  const caffe_mining::HardNetOptions& options, const py::object& uniforms_in, double loss_weight,
                  bool backward, bool check_finite) {
  const FeatureShape shape = checks::feature_shape(anchor.shape, "anchor");
  const int n = shape.n, dim = shape.dim;
  checks::check_hardnet_rows(n);
  DeviceContext& ctx = context_for(anchor.device);
  wait_for_producer(ctx, anchor);
  wait_for_producer(ctx, positive);

  const std::size_t rows = static_cast<std::size_t>(n);
  struct Pieces {
    T* dist;
    int* neg_index;
    int* neg_swapped;
    int* neg_count;
    T* row_loss;
    T* dloss_dpos;
    T* dloss_dneg;
    int* valid_rows;
    T* scratch;
    T* loss;
    T* labels;
    T* uniforms;
    unsigned long long* flag;
  } p{};
  auto carve = [&](char* base) {
    Carver carver(base);
    p.dist = carver.take<T>(rows * rows);
    p.neg_index = carver.take<int>(rows);
    p.neg_swapped = carver.take<int>(rows);
    p.neg_count = carver.take<int>(rows);
    p.row_loss = carver.take<T>(rows);
    p.dloss_dpos = carver.take<T>(rows);
    p.dloss_dneg = carver.take<T>(rows);
    p.valid_rows = carver.take<int>(1);
    p.scratch = carver.take<T>(
        caffe_mining::hardnet_workspace_bytes<T>(n, options, caffe_mining::Device::kGpu) / sizeof(T));
    p.loss = carver.take<T>(1);
    p.labels = carver.take<T>(rows);
    p.uniforms = carver.take<T>(rows);
    p.flag = carver.take<unsigned long long>(1);
    return carver.bytes();
  };
  carve(static_cast<char*>(ctx.reserve(carve(nullptr))));

  const T* a = static_cast<const T*>(anchor.data);
  const T* pos = static_cast<const T*>(positive.data);
  if (check_finite) {
    check_finite_features(ctx, a, n, dim, "anchor", p.flag);
    check_finite_features(ctx, pos, n, dim, "positive", p.flag);
  }
  checks::raise_if(options.validate<T>());
  const T* labels = nullptr;
  if (!labels_in.is_none()) {  // dense class ids, made on the host as _core makes them (N values go there and back)
    const py::object given = is_device_array(labels_in) ? py::object(host_copy(ctx, read_device_array(labels_in,
                                                                                                          "labels")))
                                                        : labels_in;
    const checks::CArray<T> dense = checks::dense_class_ids<T>(given, n);
    check_cuda(cudaMemcpyAsync(p.labels, dense.data(), sizeof(T) * n, cudaMemcpyHostToDevice, ctx.stream),
               "cudaMemcpyAsync to device");
    check_cuda(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
    labels = p.labels;
  }
  const T* uniforms = nullptr;
  if (options.batch_reduce == caffe_mining::HardNetBatchReduce::kRandom) {
    if (uniforms_in.is_none()) checks::throw_missing_uniforms();
    bool on_device = false;
    uniforms = device_rows<T>(ctx, uniforms_in, "uniforms", n, p.uniforms, &on_device, [&](const py::object& host) {
      return checks::host_uniforms<T>(host, n);
    });
    if (on_device) {  // T to double is exact: the same check as _core's, made on the device
      checks::find_first_outside_unit_interval<T>(uniforms, n, p.flag, ctx.stream);
      check_cuda(cudaGetLastError(), "uniforms check");
      const unsigned long long first = value_at(ctx, p.flag, 0);
      if (first != checks::kNoIndex) checks::throw_bad_uniform(static_cast<int>(first), value_at(ctx, uniforms, first));
    }
  }

  const Shape row_shape{static_cast<py::ssize_t>(n)};
  DeviceArray pos_dist(row_shape, typestr_of<T>(), anchor.device), neg_dist(row_shape, typestr_of<T>(), anchor.device);
  DeviceArray index_out(row_shape, "<i8", anchor.device), count_out(row_shape, "<i8", anchor.device);
  DeviceArray swapped_out(row_shape, "|b1", anchor.device);
  caffe_mining::HardNetMining<T> mining;
  mining.dist = p.dist;
  mining.pos_dist = static_cast<T*>(pos_dist.data());
  mining.neg_dist = static_cast<T*>(neg_dist.data());
  mining.neg_index = p.neg_index;
  mining.neg_swapped = p.neg_swapped;
  mining.neg_count = p.neg_count;
  mining.row_loss = p.row_loss;
  mining.dloss_dpos = p.dloss_dpos;
  mining.dloss_dneg = p.dloss_dneg;
  mining.valid_rows = p.valid_rows;

  py::object grad_anchor = py::none(), grad_positive = py::none();
  T* grad_a = nullptr;
  T* grad_p = nullptr;
  if (backward) {
    DeviceArray ga = new_like<T>(anchor.shape, anchor.device), gp = new_like<T>(anchor.shape, anchor.device);
    grad_a = static_cast<T*>(ga.data());
    grad_p = static_cast<T*>(gp.data());
    grad_anchor = py::cast(std::move(ga));
    grad_positive = py::cast(std::move(gp));
  }
  caffe_mining::hardnet_forward_gpu<T>(ctx.core(), n, dim, a, pos, labels, uniforms, options, mining, p.scratch,
                                       p.loss);
  check_cuda(cudaGetLastError(), "hardnet_forward_gpu");
  if (backward) {
    caffe_mining::hardnet_backward_gpu<T>(ctx.core(), n, dim, a, pos, labels, options, mining, T(loss_weight),
                                          p.scratch, grad_a, grad_p);
    check_cuda(cudaGetLastError(), "hardnet_backward_gpu");
  }
  checks::widen_to_int64(p.neg_index, static_cast<int64_t*>(index_out.data()), n, ctx.stream);
  checks::widen_to_int64(p.neg_count, static_cast<int64_t*>(count_out.data()), n, ctx.stream);
  checks::int_to_bool(p.neg_swapped, static_cast<bool*>(swapped_out.data()), n, ctx.stream);
  const T loss = value_at(ctx, p.loss, 0);
  finish(ctx, "hardnet_loss");
  return py::make_tuple(static_cast<double>(loss), grad_anchor, grad_positive, std::move(index_out),
                        std::move(swapped_out), std::move(count_out), std::move(pos_dist), std::move(neg_dist));
}

py::tuple hardnet_loss(const py::object& anchor_in, const py::object& positive_in, const py::object& labels,
                       double margin, bool anchor_swap, const std::string& batch_reduce, const std::string& loss_type,
                       double eps, double duplicate_threshold, const py::object& uniforms, double loss_weight,
                       bool backward, bool check_finite) {
  const DeviceInput anchor = read_feature(anchor_in, "anchor", "anchor");
  const DeviceInput positive = read_feature(positive_in, "positive", "anchor");
  checks::raise_if(caffe_mining::option_finite_problem<double>("loss_weight", loss_weight));
  const caffe_mining::HardNetOptions options =
      checks::hardnet_options(margin, anchor_swap, batch_reduce, loss_type, eps, duplicate_threshold);
  checks::raise_if(options.validate<double>());
  checks::feature_shape(anchor.shape, "anchor");
  const bool single = checks::is_float32(anchor.dtype, "anchor");
  checks::check_same(anchor.dtype, anchor.shape, "anchor", positive.dtype, positive.shape, "positive");
  if (positive.device != anchor.device) throw py::value_error("positive must be on the device of anchor");
  DeviceGuard guard(anchor.device);
  if (single) {
    return hardnet<float>(anchor, positive, labels, options, uniforms, loss_weight, backward, check_finite);
  }
  return hardnet<double>(anchor, positive, labels, options, uniforms, loss_weight, backward, check_finite);
}

}  // namespace

CAFFE_MINING_BINDINGS(hardnet) {
  m.def("hardnet_loss", &hardnet_loss, py::arg("anchor"), py::arg("positive"), py::arg("labels") = py::none(),
        py::kw_only(), py::arg("margin") = 1.0, py::arg("anchor_swap") = false, py::arg("batch_reduce") = "MIN",
        py::arg("loss_type") = "TRIPLET_MARGIN", py::arg("eps") = 1e-6, py::arg("duplicate_threshold") = 0.008,
        py::arg("uniforms") = py::none(), py::arg("loss_weight") = 1.0, py::arg("backward") = true,
        py::arg("check_finite") = true,
        "HardNetLoss on the CUDA core: _core.hardnet_loss on device arrays; the arrays it returns are DeviceArray "
        "objects.");
}
