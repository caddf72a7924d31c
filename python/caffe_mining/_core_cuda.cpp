// caffe_mining._core_cuda: Python bindings of the Caffe-free core's CUDA path (caffe_layers/src/caffe/mining/*.cu),
// the twin of _core (the CPU path): same functions, same arguments, same checks and messages
// (_binding_checks.hpp), on device arrays.
//
// This file only binds: it reads device arrays, checks arguments, allocates the core's buffers and calls the core.
//
// Array rules (where they differ from _core's):
//   - features: objects with __cuda_array_interface__ (CuPy, PyTorch, Numba, DeviceArray), float32 or float64,
//     shape (N, D) or (N, D, 1, 1), C-contiguous (caffe_mining.functional makes CuPy and PyTorch arrays
//     contiguous first), both on the same device.
//   - sim / labels / uniforms: a device array of the features' dtype with N elements, or anything NumPy converts
//     (host values are converted as _core converts them, then copied to the device).
//   - a producer's stream named in the interface (version 3) is waited for; the call itself runs on this
//     module's own stream and cuBLAS handle (one per device) and returns once its results are complete.
//   - results are DeviceArray objects (this module's cudaMalloc'd arrays, exposing __cuda_array_interface__);
//     the loss is a Python float, as from _core.
// The GIL is held throughout: the per-device scratch buffer is shared between calls.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "_binding_checks.hpp"
#include "_core_cuda_kernels.hpp"
#include "caffe_mining/contrastive_mining.hpp"
#include "caffe_mining/hardnet.hpp"
#include "caffe_mining/margin.hpp"
#include "caffe_mining/triplet.hpp"

namespace py = pybind11;
namespace checks = caffe_mining_bindings;

namespace {

using checks::FeatureShape;
using checks::Shape;

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("caffe_mining._core_cuda: ") + what + ": " + cudaGetErrorName(status) +
                             " (" + cudaGetErrorString(status) + ")");
  }
}

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("caffe_mining._core_cuda: ") + what + " failed with cuBLAS status " +
                             std::to_string(static_cast<int>(status)));
  }
}

/// Switches to a device for the lifetime of the guard.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device != previous_) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

/// One cudaMalloc'd block, freed with its last owner.
class DeviceBuffer {
 public:
  DeviceBuffer(std::size_t bytes, int device) : bytes_(bytes), device_(device) {
    if (bytes_ > 0) check_cuda(cudaMalloc(&ptr_, bytes_), "cudaMalloc");
  }
  // Never throws (a destructor): at interpreter exit the runtime may be unloading; errors are ignored then.
  ~DeviceBuffer() {
    if (!ptr_) return;
    int previous = 0;
    if (cudaGetDevice(&previous) != cudaSuccess) return;
    if (previous != device_) cudaSetDevice(device_);
    cudaFree(ptr_);
    if (previous != device_) cudaSetDevice(previous);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_;
  int device_;
};

/// A result on the device: a typed, C-contiguous view of a DeviceBuffer, exported through
/// __cuda_array_interface__ (version 3; complete when returned, so no stream is named).
class DeviceArray {
 public:
  DeviceArray(Shape shape, std::string typestr, int device)
      : shape_(std::move(shape)), typestr_(std::move(typestr)), device_(device) {
    buffer_ = std::make_shared<DeviceBuffer>(nbytes(), device_);
  }
  std::size_t size() const {
    std::size_t count = 1;
    for (py::ssize_t extent : shape_) count *= static_cast<std::size_t>(extent);
    return count;
  }
  std::size_t itemsize() const { return py::dtype(typestr_).itemsize(); }
  std::size_t nbytes() const { return size() * itemsize(); }
  void* data() const { return buffer_->data(); }
  const Shape& shape() const { return shape_; }
  int device() const { return device_; }
  py::dtype dtype() const { return py::dtype(typestr_); }

  py::dict interface() const {
    py::dict cai;
    cai["shape"] = py::tuple(py::cast(shape_));
    cai["typestr"] = typestr_;
    cai["data"] = py::make_tuple(reinterpret_cast<std::uintptr_t>(data()), false);
    cai["strides"] = py::none();
    cai["version"] = 3;
    cai["stream"] = py::none();
    return cai;
  }

  /// A NumPy copy on the host.
  py::array get() const {
    py::array host(dtype(), shape_);
    DeviceGuard guard(device_);
    check_cuda(cudaMemcpy(host.mutable_data(), data(), nbytes(), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
    return host;
  }

 private:
  Shape shape_;
  std::string typestr_;
  int device_;
  std::shared_ptr<DeviceBuffer> buffer_;
};

template <typename T>
std::string typestr_of() {
  return py::dtype::of<T>().attr("str").template cast<std::string>();
}

/// This module's stream, cuBLAS handle and grow-only scratch on one device. Created on first use, kept for the
/// life of the process (never destroyed: at interpreter exit the CUDA runtime may already be shut down).
struct DeviceContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cudaEvent_t producer_done = nullptr;
  std::unique_ptr<DeviceBuffer> scratch;

  /// The core's view: this module's stream and cuBLAS handle.
  caffe_mining::CudaContext core() const {
    caffe_mining::CudaContext context;
    context.stream = stream;
    context.cublas = cublas;
    return context;
  }

  /// At least `bytes` of scratch (contents undefined), reallocated only to grow.
  void* reserve(std::size_t bytes) {
    if (!scratch || scratch->bytes() < bytes) {
      check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
      scratch.reset();
      scratch.reset(new DeviceBuffer(bytes, device));
    }
    return scratch ? scratch->data() : nullptr;
  }
};

DeviceContext& context_for(int device) {
  static std::map<int, DeviceContext*> contexts;
  auto found = contexts.find(device);
  if (found != contexts.end()) return *found->second;
  DeviceContext* ctx = new DeviceContext();
  ctx->device = device;
  check_cuda(cudaStreamCreate(&ctx->stream), "cudaStreamCreate");
  check_cuda(cudaEventCreateWithFlags(&ctx->producer_done, cudaEventDisableTiming), "cudaEventCreate");
  check_cublas(cublasCreate(&ctx->cublas), "cublasCreate");
  check_cublas(cublasSetStream(ctx->cublas, ctx->stream), "cublasSetStream");
  contexts[device] = ctx;
  return *ctx;
}

/// Carves aligned pieces out of one scratch block (first pass: only counts the bytes).
class Carver {
 public:
  explicit Carver(char* base) : base_(base) {}
  template <typename T>
  T* take(std::size_t count) {
    offset_ = (offset_ + 255) / 256 * 256;
    T* piece = base_ ? reinterpret_cast<T*>(base_ + offset_) : nullptr;
    offset_ += count * sizeof(T);
    return piece;
  }
  std::size_t bytes() const { return offset_ + 256; }

 private:
  char* base_;
  std::size_t offset_ = 0;
};

// ---------------------------------------------------------------------------------------------------------------
// Reading device arrays

bool is_device_array(const py::object& x) { return !x.is_none() && py::hasattr(x, "__cuda_array_interface__"); }

/// A C-contiguous device array read through __cuda_array_interface__.
struct DeviceInput {
  const void* data = nullptr;
  Shape shape;
  std::string dtype;  // NumPy's name: float32, float64, int64...
  std::string typestr;
  int device = 0;
  py::object stream = py::none();  // the producer's stream (interface version 3), or None
  py::ssize_t size() const {
    py::ssize_t count = 1;
    for (py::ssize_t extent : shape) count *= extent;
    return count;
  }
};

DeviceInput read_device_array(const py::object& x, const char* name) {
  const py::dict cai = x.attr("__cuda_array_interface__").cast<py::dict>();
  DeviceInput in;
  for (auto extent : cai["shape"].cast<py::tuple>()) in.shape.push_back(extent.cast<py::ssize_t>());
  const py::dtype dtype(cai["typestr"].cast<std::string>());
  in.dtype = py::str(dtype).cast<std::string>();
  in.typestr = cai["typestr"].cast<std::string>();
  in.data = reinterpret_cast<const void*>(cai["data"].cast<py::tuple>()[0].cast<std::uintptr_t>());
  if (cai.contains("mask") && !cai["mask"].is_none()) {
    throw py::value_error(std::string(name) + ": masked device arrays are not supported");
  }
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    const py::tuple strides = cai["strides"].cast<py::tuple>();
    py::ssize_t expected = dtype.itemsize();
    bool contiguous = in.size() == 0;
    if (!contiguous) {
      contiguous = true;
      for (int k = static_cast<int>(in.shape.size()) - 1; k >= 0; --k) {
        if (in.shape[k] != 1 && strides[k].cast<py::ssize_t>() != expected) contiguous = false;
        expected *= in.shape[k];
      }
    }
    if (!contiguous) {
      throw py::value_error(std::string(name) + " must be C-contiguous on the device. Got strides " +
                            py::str(strides).cast<std::string>());
    }
  }
  if (cai.contains("stream")) in.stream = cai["stream"];
  if (in.data != nullptr) {
    cudaPointerAttributes attributes;
    check_cuda(cudaPointerGetAttributes(&attributes, in.data), "cudaPointerGetAttributes");
    if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
      throw py::type_error(std::string(name) + " exposes __cuda_array_interface__ but its pointer is not device "
                           "memory");
    }
    in.device = attributes.device;
  } else {
    check_cuda(cudaGetDevice(&in.device), "cudaGetDevice");
  }
  return in;
}

DeviceInput read_feature(const py::object& x, const char* name, const char* like) {
  if (!is_device_array(x)) {
    const std::string like_first = name == std::string(like) ? "" : std::string(" like ") + like;
    throw py::type_error(std::string(name) + " must be a device array (with __cuda_array_interface__)" + like_first +
                         ". Got: " + py::repr(x).cast<std::string>());
  }
  return read_device_array(x, name);
}

/// Makes the context's stream wait for the producer's stream named in the interface (1: legacy default stream,
/// 2: per-thread default stream, else a cudaStream_t).
void wait_for_producer(DeviceContext& ctx, const DeviceInput& in) {
  if (in.stream.is_none()) return;
  const std::uintptr_t value = in.stream.cast<std::uintptr_t>();
  if (value == 0) return;  // invalid by the protocol; nothing to wait for
  cudaStream_t producer = value == 1   ? cudaStreamLegacy
                          : value == 2 ? cudaStreamPerThread
                                       : reinterpret_cast<cudaStream_t>(value);
  check_cuda(cudaEventRecord(ctx.producer_done, producer), "cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(ctx.stream, ctx.producer_done, 0), "cudaStreamWaitEvent");
}

/// A device array's values copied into a new NumPy array (per-row values that the host converts or checks).
py::array host_copy(DeviceContext& ctx, const DeviceInput& in) {
  wait_for_producer(ctx, in);
  py::array host(py::dtype(in.typestr), in.shape);
  check_cuda(cudaMemcpyAsync(host.mutable_data(), in.data, host.nbytes(), cudaMemcpyDeviceToHost, ctx.stream),
             "cudaMemcpyAsync to host");
  check_cuda(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
  return host;
}

/// Per-row values (sim, uniforms) for the device in the features' dtype T: a C-contiguous device array of T is
/// used in place (its values are then checked on the device); anything else is converted on the host as _core
/// converts it (`convert`, which also checks) and copied into `staging`.
template <typename T, typename Convert>
const T* device_rows(DeviceContext& ctx, const py::object& values, const char* name, int n, T* staging,
                     bool* on_device, Convert convert) {
  py::object host = values;
  if (is_device_array(values)) {
    const DeviceInput in = read_device_array(values, name);
    if (in.device != ctx.device) throw py::value_error(std::string(name) + " must be on the features' device");
    if (in.dtype == py::str(py::dtype::of<T>()).cast<std::string>() && in.size() == n) {
      wait_for_producer(ctx, in);
      *on_device = true;
      return static_cast<const T*>(in.data);
    }
    host = host_copy(ctx, in);
  }
  *on_device = false;
  const checks::CArray<T> converted = convert(host);
  check_cuda(cudaMemcpyAsync(staging, converted.data(), sizeof(T) * n, cudaMemcpyHostToDevice, ctx.stream),
             "cudaMemcpyAsync to device");
  check_cuda(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");  // `converted` dies with this scope
  return staging;
}

/// One value back from the device (for an error message).
template <typename T>
T value_at(DeviceContext& ctx, const T* data, unsigned long long index) {
  T value;
  check_cuda(cudaMemcpyAsync(&value, data + index, sizeof(T), cudaMemcpyDeviceToHost, ctx.stream),
             "cudaMemcpyAsync to host");
  check_cuda(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
  return value;
}

template <typename T>
unsigned long long first_non_finite(DeviceContext& ctx, const T* data, long long count, unsigned long long* flag) {
  checks::find_first_non_finite<T>(data, count, flag, ctx.stream);
  check_cuda(cudaGetLastError(), "non-finite check");
  return value_at(ctx, flag, 0);
}

template <typename T>
void check_finite_features(DeviceContext& ctx, const T* data, int n, int dim, const char* name,
                           unsigned long long* flag) {
  const unsigned long long first = first_non_finite(ctx, data, static_cast<long long>(n) * dim, flag);
  if (first != checks::kNoIndex) {
    checks::throw_non_finite(name, value_at(ctx, data, first), static_cast<long long>(first / dim));
  }
}

/// A result array of the features' shape (N, D) or (N, D, 1, 1).
template <typename T>
DeviceArray new_like(const Shape& shape, int device) {
  return DeviceArray(shape, typestr_of<T>(), device);
}

void finish(DeviceContext& ctx, const char* what) {
  check_cuda(cudaGetLastError(), what);
  check_cuda(cudaStreamSynchronize(ctx.stream), what);
}

// ---------------------------------------------------------------------------------------------------------------
// MiningContrastiveLoss

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

// ---------------------------------------------------------------------------------------------------------------
// HardNetLoss

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

// ---------------------------------------------------------------------------------------------------------------
// MarginLoss

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

// ---------------------------------------------------------------------------------------------------------------
// TripletLoss

/// Host values of a device buffer of `count` elements.
template <typename T>
std::vector<T> host_values(DeviceContext& ctx, const T* data, std::size_t count) {
  std::vector<T> host(count);
  if (count > 0) {
    check_cuda(cudaMemcpyAsync(host.data(), data, count * sizeof(T), cudaMemcpyDeviceToHost, ctx.stream),
               "cudaMemcpyAsync to host");
  }
  check_cuda(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
  return host;
}

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

/// A host array copied to a new DeviceArray (float32/float64 as given; other dtypes as NumPy holds them).
DeviceArray to_device(const py::array& host_in, int device) {
  const py::array host = py::array::ensure(host_in, py::array::c_style);
  Shape shape(host.shape(), host.shape() + host.ndim());
  DeviceGuard guard(device);
  DeviceArray out(shape, host.dtype().attr("str").cast<std::string>(), device);
  check_cuda(cudaMemcpy(out.data(), host.data(), out.nbytes(), cudaMemcpyHostToDevice), "cudaMemcpy to device");
  return out;
}

/// Devices the CUDA runtime sees; 0 where there is no GPU or no driver (never raises).
int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
}

}  // namespace

PYBIND11_MODULE(_core_cuda, m) {
  m.doc() = "Bindings of the Caffe-free caffe-mining core (CUDA path): _core's functions on device arrays.";

  py::class_<DeviceArray>(m, "DeviceArray", "A result on the device (cudaMalloc'd), with __cuda_array_interface__.")
      .def_property_readonly("__cuda_array_interface__", &DeviceArray::interface)
      .def_property_readonly("shape", [](const DeviceArray& x) { return py::tuple(py::cast(x.shape())); })
      .def_property_readonly("dtype", &DeviceArray::dtype)
      .def_property_readonly("device", &DeviceArray::device)
      .def_property_readonly("size", &DeviceArray::size)
      .def("get", &DeviceArray::get, "A NumPy copy on the host.")
      .def("__len__", [](const DeviceArray& x) { return x.shape().empty() ? 0 : x.shape()[0]; })
      .def("__repr__", [](const DeviceArray& x) {
        return "DeviceArray(shape=" + checks::shape_repr(x.shape()) + ", dtype=" +
               py::str(x.dtype()).cast<std::string>() + ", device=" + std::to_string(x.device()) + ")";
      });

  m.def("device_count", &device_count, "Number of CUDA devices; 0 without a GPU or driver (never raises).");
  m.def("to_device", &to_device, py::arg("host"), py::arg("device") = 0,
        "Copies a NumPy array (C order) to a new DeviceArray on `device`.");

  m.def("mining_contrastive_loss", &mining_contrastive_loss, py::arg("feat"), py::arg("feat_p"), py::arg("sim"),
        py::kw_only(), py::arg("margin") = 1.0, py::arg("legacy_version") = false, py::arg("mining_ratio") = 1,
        py::arg("loss_weight") = 1.0, py::arg("backward") = true, py::arg("check_finite") = true,
        "MiningContrastiveLoss on the CUDA core: _core.mining_contrastive_loss on device arrays; the arrays it "
        "returns are DeviceArray objects.");

  m.def("hardnet_loss", &hardnet_loss, py::arg("anchor"), py::arg("positive"), py::arg("labels") = py::none(),
        py::kw_only(), py::arg("margin") = 1.0, py::arg("anchor_swap") = false, py::arg("batch_reduce") = "MIN",
        py::arg("loss_type") = "TRIPLET_MARGIN", py::arg("eps") = 1e-6, py::arg("duplicate_threshold") = 0.008,
        py::arg("uniforms") = py::none(), py::arg("loss_weight") = 1.0, py::arg("backward") = true,
        py::arg("check_finite") = true,
        "HardNetLoss on the CUDA core: _core.hardnet_loss on device arrays; the arrays it returns are DeviceArray "
        "objects.");

  m.def("margin_loss", &margin_loss, py::arg("embedding"), py::arg("labels"), py::arg("beta") = py::none(),
        py::kw_only(), py::arg("margin") = 0.2, py::arg("beta_init") = 1.2, py::arg("nu") = 0.0,
        py::arg("num_classes") = 0, py::arg("negatives_per_positive") = 1, py::arg("sampler") = "DISTANCE_WEIGHTED",
        py::arg("cutoff") = 0.5, py::arg("nonzero_loss_cutoff") = 1.4, py::arg("eps") = 1e-8, py::arg("seed") = 0,
        py::arg("iteration") = 0, py::arg("loss_weight") = 1.0, py::arg("backward") = true,
        py::arg("check_finite") = true,
        "MarginLoss on the CUDA core: _core.margin_loss on a device embedding (labels and beta: host or device "
        "values); the arrays it returns are DeviceArray objects.");

  m.def("triplet_loss", &triplet_loss, py::arg("embedding"), py::arg("labels"), py::kw_only(),
        py::arg("margin") = 0.2, py::arg("soft_margin") = false, py::arg("squared") = false,
        py::arg("mining") = "BATCH_HARD", py::arg("eps") = 1e-12, py::arg("loss_weight") = 1.0,
        py::arg("backward") = true, py::arg("check_finite") = true,
        "TripletLoss on the CUDA core: _core.triplet_loss on device arrays; the arrays it returns are DeviceArray "
        "objects (the triplets table is made on the host and copied over).");
}
