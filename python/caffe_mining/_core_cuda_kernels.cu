// Device helpers of the CUDA bindings; see _core_cuda_kernels.hpp.
#include <cuda_runtime.h>

#include <cmath>

#include "_core_cuda_kernels.hpp"
#include "caffe_mining/common/launch.hpp"

namespace caffe_mining_bindings {

namespace {

using caffe_mining::kThreads;

int blocks_for(long long count) { return caffe_mining::blocks_for(static_cast<std::size_t>(count)); }

template <typename T>
__device__ bool outside_unit_interval(T x) {
  return !(x >= T(0) && x < T(1));
}

template <typename T>
__global__ void first_non_finite_kernel(const T* x, long long count, unsigned long long* first) {
  for (long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; k < count;
       k += static_cast<long long>(gridDim.x) * blockDim.x) {
    if (!isfinite(x[k])) atomicMin(first, static_cast<unsigned long long>(k));
  }
}

template <typename T>
__global__ void first_outside_unit_kernel(const T* x, long long count, unsigned long long* first) {
  for (long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; k < count;
       k += static_cast<long long>(gridDim.x) * blockDim.x) {
    if (outside_unit_interval(x[k])) atomicMin(first, static_cast<unsigned long long>(k));
  }
}

__global__ void widen_kernel(const int* in, int64_t* out, long long count) {
  for (long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; k < count;
       k += static_cast<long long>(gridDim.x) * blockDim.x) {
    out[k] = in[k];
  }
}

__global__ void to_bool_kernel(const int* in, bool* out, long long count) {
  for (long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; k < count;
       k += static_cast<long long>(gridDim.x) * blockDim.x) {
    out[k] = in[k] != 0;
  }
}

}  // namespace

template <typename T>
void find_first_non_finite(const T* x, long long count, unsigned long long* first, CUstream_st* stream) {
  cudaMemsetAsync(first, 0xff, sizeof(*first), stream);  // kNoIndex
  if (count > 0) first_non_finite_kernel<T><<<blocks_for(count), kThreads, 0, stream>>>(x, count, first);
}

template <typename T>
void find_first_outside_unit_interval(const T* x, long long count, unsigned long long* first, CUstream_st* stream) {
  cudaMemsetAsync(first, 0xff, sizeof(*first), stream);
  if (count > 0) first_outside_unit_kernel<T><<<blocks_for(count), kThreads, 0, stream>>>(x, count, first);
}

void widen_to_int64(const int* in, int64_t* out, long long count, CUstream_st* stream) {
  if (count > 0) widen_kernel<<<blocks_for(count), kThreads, 0, stream>>>(in, out, count);
}

void int_to_bool(const int* in, bool* out, long long count, CUstream_st* stream) {
  if (count > 0) to_bool_kernel<<<blocks_for(count), kThreads, 0, stream>>>(in, out, count);
}

template void find_first_non_finite<float>(const float*, long long, unsigned long long*, CUstream_st*);
template void find_first_non_finite<double>(const double*, long long, unsigned long long*, CUstream_st*);
template void find_first_outside_unit_interval<float>(const float*, long long, unsigned long long*, CUstream_st*);
template void find_first_outside_unit_interval<double>(const double*, long long, unsigned long long*, CUstream_st*);

}  // namespace caffe_mining_bindings
