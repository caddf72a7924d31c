// caffe_mining._core_cuda's MarginLoss (CUDA path): margin_loss on device arrays.
// It only binds (device arrays, checks, the core's buffers, the core's calls); the array rules are _core_cuda.cpp's.
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "_core_cuda.hpp"
#include "bindings/margin_checks.hpp"
#include "bindings/registry.hpp"
#include "caffe_mining/margin.hpp"

namespace py = pybind11;
namespace checks = caffe_mining_bindings;

namespace {

using checks::FeatureShape;
using checks::Shape;
using namespace caffe_mining_bindings::device;  // DeviceInput, DeviceArray, context_for, Carver, value_at...

template <typename T>
py::tuple margin(const DeviceInput& embedding, const py::object& labels_in, const py::object& beta_in,
                 const caffe_mining::MarginOptions& options, uint64_t iteration, double loss_weight, bool backward,
                 bool check_finite) {
  const FeatureShape shape = checks::feature_shape(embedding.shape, "embedding");
  const int n = shape.n, dim = shape.dim;
  DeviceContext& ctx = context_for(embedding.device);
  wait_for_producer(ctx, embedding);
  checks::raise_if(options.validate<T>());
  // Labels and beta are small: checked and converted on the host as _core does (device values come over first),
  // and the capacity of the triplet buffers is the labels' (host) count.
  auto on_host = [&](const py::object& values, const char* name) {
    return is_device_array(values) ? py::object(host_copy(ctx, read_device_array(values, name))) : values;
  };
  const checks::CArray<T> labels = checks::margin_labels<T>(on_host(labels_in, "labels"), n, options.num_classes);
  const int betas = options.num_classes > 0 ? options.num_classes : 1;
  const checks::CArray<T> beta = checks::margin_beta<T>(on_host(beta_in, "beta"), betas, options.beta_init,
                                                        check_finite);
  const int capacity = checks::margin_capacity(labels, n, options);
  const std::size_t slots = static_cast<std::size_t>(capacity > 0 ? capacity : 1);

  struct Pieces {
    int* triplets;
    T* pos_dist;
    T* neg_dist;
    int* anchor_count;
    int* anchor_offset;
    int* counts;
    char* workspace;
    T* loss;
    T* labels;
    T* beta;
    unsigned long long* flag;
  } p{};
  auto carve = [&](char* base) {
    Carver carver(base);
    p.triplets = carver.take<int>(3 * slots);
    p.pos_dist = carver.take<T>(slots);
    p.neg_dist = carver.take<T>(slots);
    p.anchor_count = carver.take<int>(n);
    p.anchor_offset = carver.take<int>(n);
    p.counts = carver.take<int>(2);
    p.workspace = carver.take<char>(caffe_mining::margin_workspace_bytes<T>(n, options, caffe_mining::Device::kGpu));
    p.loss = carver.take<T>(1);
    p.labels = carver.take<T>(n);
    p.beta = carver.take<T>(betas);
    p.flag = carver.take<unsigned long long>(1);
    return carver.bytes();
  };
  carve(static_cast<char*>(ctx.reserve(carve(nullptr))));

  const T* x = static_cast<const T*>(embedding.data);
  if (check_finite) check_finite_features(ctx, x, n, dim, "embedding", p.flag);
  check_cuda(cudaMemcpyAsync(p.labels, labels.data(), sizeof(T) * n, cudaMemcpyHostToDevice, ctx.stream),
             "cudaMemcpyAsync to device");
  check_cuda(cudaMemcpyAsync(p.beta, beta.data(), sizeof(T) * betas, cudaMemcpyHostToDevice, ctx.stream),
             "cudaMemcpyAsync to device");
  check_cuda(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");  // the host arrays die with this scope

  caffe_mining::MarginMining<T> mining;
  mining.triplets = p.triplets;
  mining.pos_dist = p.pos_dist;
  mining.neg_dist = p.neg_dist;
  mining.anchor_count = p.anchor_count;
  mining.anchor_offset = p.anchor_offset;
  mining.counts = p.counts;
  caffe_mining::CudaContext core_context;
  core_context.stream = ctx.stream;
  core_context.cublas = ctx.cublas;
  py::object grad_embedding = py::none(), grad_beta = py::none();
  caffe_mining::margin_forward_gpu<T>(core_context, n, dim, x, p.labels, p.beta, options, iteration, capacity, mining,
                                      p.workspace, p.loss);
  check_cuda(cudaGetLastError(), "margin_forward_gpu");
  if (backward) {
    DeviceArray gx = new_like<T>(embedding.shape, embedding.device);
    DeviceArray gb(Shape{static_cast<py::ssize_t>(betas)}, typestr_of<T>(), embedding.device);
    caffe_mining::margin_backward_gpu<T>(core_context, n, dim, x, p.labels, p.beta, options, mining, T(loss_weight),
                                         p.workspace, static_cast<T*>(gx.data()), static_cast<T*>(gb.data()));
    check_cuda(cudaGetLastError(), "margin_backward_gpu");
    grad_embedding = py::cast(std::move(gx));
    grad_beta = py::cast(std::move(gb));
  }
  const int triplet_count = value_at(ctx, p.counts, 0), hinge_count = value_at(ctx, p.counts, 1);
  const py::ssize_t count = triplet_count > 0 ? triplet_count : 0;
  DeviceArray triplets_out(Shape{count, 3}, "<i8", embedding.device);
  DeviceArray pos_out(Shape{count}, typestr_of<T>(), embedding.device);
  DeviceArray neg_out(Shape{count}, typestr_of<T>(), embedding.device);
  if (count > 0) {
    checks::widen_to_int64(p.triplets, static_cast<int64_t*>(triplets_out.data()), 3 * count, ctx.stream);
    check_cuda(cudaMemcpyAsync(pos_out.data(), p.pos_dist, sizeof(T) * count, cudaMemcpyDeviceToDevice, ctx.stream),
               "cudaMemcpyAsync on the device");
    check_cuda(cudaMemcpyAsync(neg_out.data(), p.neg_dist, sizeof(T) * count, cudaMemcpyDeviceToDevice, ctx.stream),
               "cudaMemcpyAsync on the device");
  }
  const T loss = value_at(ctx, p.loss, 0);
  finish(ctx, "margin_loss");
  return py::make_tuple(static_cast<double>(loss), grad_embedding, grad_beta, std::move(triplets_out),
                        std::move(pos_out), std::move(neg_out), hinge_count);
}

py::tuple margin_loss(const py::object& embedding_in, const py::object& labels, const py::object& beta,
                      double margin_value, double beta_init, double nu, int num_classes, int negatives_per_positive,
                      const std::string& sampler, double cutoff, double nonzero_loss_cutoff, double eps,
                      uint64_t seed, uint64_t iteration, double loss_weight, bool backward, bool check_finite) {
  const DeviceInput embedding = read_feature(embedding_in, "embedding", "embedding");
  checks::raise_if(caffe_mining::option_finite_problem<double>("loss_weight", loss_weight));
  const caffe_mining::MarginOptions options = checks::margin_options(
      margin_value, beta_init, nu, num_classes, negatives_per_positive, sampler, cutoff, nonzero_loss_cutoff, eps,
      seed);
  checks::raise_if(options.validate<double>());
  checks::feature_shape(embedding.shape, "embedding");
  const bool single = checks::is_float32(embedding.dtype, "embedding");
  DeviceGuard guard(embedding.device);
  if (single) {
    return margin<float>(embedding, labels, beta, options, iteration, loss_weight, backward, check_finite);
  }
  return margin<double>(embedding, labels, beta, options, iteration, loss_weight, backward, check_finite);
}

}  // namespace

CAFFE_MINING_BINDINGS(margin) {
  m.def("margin_loss", &margin_loss, py::arg("embedding"), py::arg("labels"), py::arg("beta") = py::none(),
        py::kw_only(), py::arg("margin") = 0.2, py::arg("beta_init") = 1.2, py::arg("nu") = 0.0,
        py::arg("num_classes") = 0, py::arg("negatives_per_positive") = 1, py::arg("sampler") = "DISTANCE_WEIGHTED",
        py::arg("cutoff") = 0.5, py::arg("nonzero_loss_cutoff") = 1.4, py::arg("eps") = 1e-8, py::arg("seed") = 0,
        py::arg("iteration") = 0, py::arg("loss_weight") = 1.0, py::arg("backward") = true,
        py::arg("check_finite") = true,
        "MarginLoss on the CUDA core: _core.margin_loss on a device embedding (labels and beta: host or device "
        "values); the arrays it returns are DeviceArray objects.");
}
