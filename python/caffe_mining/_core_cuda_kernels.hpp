// Small device helpers of the CUDA bindings (_core_cuda.hpp, bindings/<loss>_cuda.cpp): argument checks on device
// arrays and the conversions of the core's int outputs to the CPU bindings' dtypes. The losses themselves are the
// core's. Declared without CUDA headers so that the binding files compile with the host compiler.
#ifndef CAFFE_MINING_PYTHON_CORE_CUDA_KERNELS_HPP_
#define CAFFE_MINING_PYTHON_CORE_CUDA_KERNELS_HPP_

#include <cstdint>

struct CUstream_st;

namespace caffe_mining_bindings {

/// No index found: what the search functions below write when every element passes.
constexpr unsigned long long kNoIndex = ~0ull;

/// Writes to *first (device) the lowest index k < count with a non-finite x[k], or kNoIndex.
template <typename T>
void find_first_non_finite(const T* x, long long count, unsigned long long* first, CUstream_st* stream);

/// Writes to *first (device) the lowest index k < count with x[k] outside [0, 1) (NaN included), or kNoIndex.
template <typename T>
void find_first_outside_unit_interval(const T* x, long long count, unsigned long long* first, CUstream_st* stream);

/// out[k] = in[k] (int32 to int64), k < count.
void widen_to_int64(const int* in, int64_t* out, long long count, CUstream_st* stream);

/// out[k] = in[k] != 0 (int32 to bool stored as one byte), k < count.
void int_to_bool(const int* in, bool* out, long long count, CUstream_st* stream);

}  // namespace caffe_mining_bindings

#endif  // CAFFE_MINING_PYTHON_CORE_CUDA_KERNELS_HPP_
