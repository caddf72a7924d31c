// What every CUDA binding file (bindings/<loss>_cuda.cpp, compiled into caffe_mining._core_cuda) shares: device
// arrays read through __cuda_array_interface__, DeviceArray results, this module's stream, cuBLAS handle and scratch
// per device, and the checks made on the device, over the checks both modules share (_binding_checks.hpp). What is
// not inline here is defined in _core_cuda.cpp, which also holds the array rules.
#ifndef CAFFE_MINING_PYTHON_CORE_CUDA_HPP_
#define CAFFE_MINING_PYTHON_CORE_CUDA_HPP_

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "_binding_checks.hpp"
#include "_core_cuda_kernels.hpp"
#include "caffe_mining/common/cuda_context.hpp"

namespace caffe_mining_bindings {
namespace device {

/// A failed CUDA runtime call (or cuBLAS call) as a RuntimeError naming `what`.
void check_cuda(cudaError_t status, const char* what);
void check_cublas(cublasStatus_t status, const char* what);

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

/// This module's context on `device`, created on first use.
DeviceContext& context_for(int device);

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

/// Whether x exposes __cuda_array_interface__.
bool is_device_array(const py::object& x);

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

DeviceInput read_device_array(const py::object& x, const char* name);

/// A feature array: a device array, else a TypeError (`like`: the first feature array, named in the message).
DeviceInput read_feature(const py::object& x, const char* name, const char* like);

/// Makes the context's stream wait for the producer's stream named in the interface (1: legacy default stream,
/// 2: per-thread default stream, else a cudaStream_t).
void wait_for_producer(DeviceContext& ctx, const DeviceInput& in);

/// A device array's values copied into a new NumPy array (per-row values that the host converts or checks).
py::array host_copy(DeviceContext& ctx, const DeviceInput& in);

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
  const CArray<T> converted = convert(host);
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
  find_first_non_finite<T>(data, count, flag, ctx.stream);
  check_cuda(cudaGetLastError(), "non-finite check");
  return value_at(ctx, flag, 0);
}

template <typename T>
void check_finite_features(DeviceContext& ctx, const T* data, int n, int dim, const char* name,
                           unsigned long long* flag) {
  const unsigned long long first = first_non_finite(ctx, data, static_cast<long long>(n) * dim, flag);
  if (first != kNoIndex) {
    throw_non_finite(name, value_at(ctx, data, first), static_cast<long long>(first / dim));
  }
}

/// A result array of the features' shape (N, D) or (N, D, 1, 1).
template <typename T>
DeviceArray new_like(const Shape& shape, int device) {
  return DeviceArray(shape, typestr_of<T>(), device);
}

/// Raises the last CUDA error (naming `what`), then waits for this module's stream.
void finish(DeviceContext& ctx, const char* what);

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

}  // namespace device
}  // namespace caffe_mining_bindings

#endif  // CAFFE_MINING_PYTHON_CORE_CUDA_HPP_
