// What every GPU entry point of the core takes first: the stream it queues on and the cuBLAS handle its GEMMs use.
// Declared with the CUDA types' own struct names (cudaStream_t is `CUstream_st*`, cublasHandle_t is
// `cublasContext*`), so plain C++ (the CPU build, the Python module) can include it without CUDA headers.
#ifndef CAFFE_MINING_COMMON_CUDA_CONTEXT_HPP_
#define CAFFE_MINING_COMMON_CUDA_CONTEXT_HPP_

struct CUstream_st;
struct cublasContext;

namespace caffe_mining {

/// CUDA stream type without CUDA headers (same type as cudaStream_t).
typedef CUstream_st* cm_stream_t;

/// A GPU call's context. Everything a call does is queued on `stream`, with no host synchronisation. A loss that
/// runs GEMMs sets `cublas` to `stream` and to host pointer mode for the call and restores both before returning
/// (CublasCallScope, common/cublas_call.cuh); one that runs none may be given a null handle.
struct CudaContext {
  cm_stream_t stream = nullptr;
  cublasContext* cublas = nullptr;
};

}  // namespace caffe_mining

#endif  // CAFFE_MINING_COMMON_CUDA_CONTEXT_HPP_
