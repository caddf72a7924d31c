// caffe_mining._core_cuda: Python bindings of the Caffe-free core's CUDA path (caffe_layers/src/caffe/mining/*.cu),
// the twin of _core (the CPU path): same functions, same arguments, same checks and messages
// (_binding_checks.hpp), on device arrays.
//
// The module is DeviceArray, device_count and to_device (here) and its losses' binding files,
// bindings/<loss>_cuda.cpp, each registered by itself (bindings/registry.hpp); they share _core_cuda.hpp, whose
// device-array handling this file defines. They only bind: they read device arrays, check arguments, allocate the
// core's buffers and call the core.
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

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

#include "_core_cuda.hpp"
#include "bindings/registry.hpp"

namespace py = pybind11;
namespace checks = caffe_mining_bindings;

namespace caffe_mining_bindings {
namespace device {

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

bool is_device_array(const py::object& x) { return !x.is_none() && py::hasattr(x, "__cuda_array_interface__"); }

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

py::array host_copy(DeviceContext& ctx, const DeviceInput& in) {
  wait_for_producer(ctx, in);
  py::array host(py::dtype(in.typestr), in.shape);
  check_cuda(cudaMemcpyAsync(host.mutable_data(), in.data, host.nbytes(), cudaMemcpyDeviceToHost, ctx.stream),
             "cudaMemcpyAsync to host");
  check_cuda(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
  return host;
}

void finish(DeviceContext& ctx, const char* what) {
  check_cuda(cudaGetLastError(), what);
  check_cuda(cudaStreamSynchronize(ctx.stream), what);
}

}  // namespace device
}  // namespace caffe_mining_bindings

namespace {

using caffe_mining_bindings::Shape;
using namespace caffe_mining_bindings::device;  // DeviceArray, DeviceGuard, check_cuda

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

  caffe_mining_bindings::bind_registered(m);
}
