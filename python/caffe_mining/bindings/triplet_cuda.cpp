// caffe_mining._core_cuda's TripletLoss (CUDA path): triplet_loss on device arrays.
// It only binds (device arrays, checks, the core's buffers, the core's calls); the array rules are _core_cuda.cpp's.
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "_core_cuda.hpp"
#include "bindings/triplet_checks.hpp"
#include "bindings/registry.hpp"
#include "caffe_mining/triplet.hpp"

namespace py = pybind11;
namespace checks = caffe_mining_bindings;

namespace {

using checks::FeatureShape;
using checks::Shape;
using namespace caffe_mining_bindings::device;  // DeviceInput, DeviceArray, context_for, Carver, value_at...

template <typename T>
py::tuple triplet(const DeviceInput& embedding, const py::object& labels_in,
                  const caffe_mining::TripletOptions& options, double loss_weight, bool backward, bool check_finite) {
  const FeatureShape shape = checks::feature_shape(embedding.shape, "embedding");
  const int n = shape.n, dim = shape.dim;
  checks::check_triplet_rows(n);
  DeviceContext& ctx = context_for(embedding.device);
  wait_for_producer(ctx, embedding);

  const std::size_t rows = static_cast<std::size_t>(n);
  const bool hard = options.mining == caffe_mining::TripletMiner::kBatchHard;
  const bool semi = options.mining == caffe_mining::TripletMiner::kSemiHard;
  struct Pieces {
    T* dist;
    T* weight;
    int* positive;
    int* negative;
    int* pair_negative;
    T* row_loss;
    long long* row_terms;
    long long* terms;
    T* scratch;
    T* loss;
    T* labels;
    unsigned long long* flag;
  } p{};
  auto carve = [&](char* base) {
    Carver carver(base);
    p.dist = carver.take<T>(rows * rows);
    p.weight = carver.take<T>(rows * rows);
    p.positive = carver.take<int>(hard ? rows : 0);
    p.negative = carver.take<int>(hard ? rows : 0);
    p.pair_negative = carver.take<int>(semi ? rows * rows : 0);
    p.row_loss = carver.take<T>(rows);
    p.row_terms = carver.take<long long>(rows);
    p.terms = carver.take<long long>(1);
    p.scratch = carver.take<T>(
        caffe_mining::triplet_workspace_bytes<T>(n, options, caffe_mining::Device::kGpu) / sizeof(T));
    p.loss = carver.take<T>(1);
    p.labels = carver.take<T>(rows);
    p.flag = carver.take<unsigned long long>(1);
    return carver.bytes();
  };
  carve(static_cast<char*>(ctx.reserve(carve(nullptr))));

  const T* x = static_cast<const T*>(embedding.data);
  if (check_finite) check_finite_features(ctx, x, n, dim, "embedding", p.flag);
  checks::raise_if(options.validate<T>());
  // Dense class ids, made on the host as _core makes them (N values go there and back).
  const py::object given = is_device_array(labels_in)
                               ? py::object(host_copy(ctx, read_device_array(labels_in, "labels")))
                               : labels_in;
  const checks::CArray<T> labels = checks::triplet_class_ids<T>(given, n);
  check_cuda(cudaMemcpyAsync(p.labels, labels.data(), sizeof(T) * n, cudaMemcpyHostToDevice, ctx.stream),
             "cudaMemcpyAsync to device");
  check_cuda(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");

  caffe_mining::TripletMining<T> mining;
  mining.dist = p.dist;
  mining.weight = p.weight;
  mining.positive = hard ? p.positive : nullptr;
  mining.negative = hard ? p.negative : nullptr;
  mining.pair_negative = semi ? p.pair_negative : nullptr;
  mining.row_loss = p.row_loss;
  mining.row_terms = p.row_terms;
  mining.terms = p.terms;

  py::object grad_embedding = py::none();
  T* grad = nullptr;
  if (backward) {
    DeviceArray g = new_like<T>(embedding.shape, embedding.device);
    grad = static_cast<T*>(g.data());
    grad_embedding = py::cast(std::move(g));
  }
  caffe_mining::triplet_forward_gpu<T>(ctx.core(), n, dim, x, p.labels, options, mining, p.scratch,
                                       p.loss);
  check_cuda(cudaGetLastError(), "triplet_forward_gpu");
  if (backward) {
    caffe_mining::triplet_backward_gpu<T>(ctx.core(), n, dim, x, options, mining, T(loss_weight),
                                          p.scratch, grad);
    check_cuda(cudaGetLastError(), "triplet_backward_gpu");
  }
  // The triplets table is made on the host from the decisions (as _core makes it), then sent to the device.
  const std::vector<int> positive = host_values(ctx, p.positive, hard ? rows : 0);
  const std::vector<int> negative = host_values(ctx, p.negative, hard ? rows : 0);
  const std::vector<int> pair_negative = host_values(ctx, p.pair_negative, semi ? rows * rows : 0);
  const long long terms = host_values(ctx, p.terms, 1)[0];
  const T loss = value_at(ctx, p.loss, 0);
  finish(ctx, "triplet_loss");
  const std::vector<int64_t> table = checks::triplet_rows(options.mining, n, labels.data(), positive.data(),
                                                          negative.data(), pair_negative.data());
  DeviceArray triplets(Shape{static_cast<py::ssize_t>(table.size() / 3), 3}, "<i8", embedding.device);
  if (!table.empty()) {
    check_cuda(cudaMemcpy(triplets.data(), table.data(), table.size() * sizeof(int64_t), cudaMemcpyHostToDevice),
               "cudaMemcpy to device");
  }
  return py::make_tuple(static_cast<double>(loss), grad_embedding, std::move(triplets), terms);
}

py::tuple triplet_loss(const py::object& embedding_in, const py::object& labels, double margin, bool soft_margin,
                       bool squared, const std::string& mining, double eps, double loss_weight, bool backward,
                       bool check_finite) {
  const DeviceInput embedding = read_feature(embedding_in, "embedding", "embedding");
  checks::raise_if(caffe_mining::option_finite_problem<double>("loss_weight", loss_weight));
  const caffe_mining::TripletOptions options = checks::triplet_options(margin, soft_margin, squared, mining, eps);
  checks::raise_if(options.validate<double>());
  checks::feature_shape(embedding.shape, "embedding");
  const bool single = checks::is_float32(embedding.dtype, "embedding");
  DeviceGuard guard(embedding.device);
  if (single) return triplet<float>(embedding, labels, options, loss_weight, backward, check_finite);
  return triplet<double>(embedding, labels, options, loss_weight, backward, check_finite);
}

}  // namespace

CAFFE_MINING_BINDINGS(triplet) {
  m.def("triplet_loss", &triplet_loss, py::arg("embedding"), py::arg("labels"), py::kw_only(),
        py::arg("margin") = 0.2, py::arg("soft_margin") = false, py::arg("squared") = false,
        py::arg("mining") = "BATCH_HARD", py::arg("eps") = 1e-12, py::arg("loss_weight") = 1.0,
        py::arg("backward") = true, py::arg("check_finite") = true,
        "TripletLoss on the CUDA core: _core.triplet_loss on device arrays; the arrays it returns are DeviceArray "
        "objects (the triplets table is made on the host and copied over).");
}
