// cuBLAS for the core's .cu files: one GPU call's stream and pointer-mode guard, and the GEMM overloads.
// Needs the CUDA headers; include it from .cu files only.
#ifndef CAFFE_MINING_COMMON_CUBLAS_CALL_CUH_
#define CAFFE_MINING_COMMON_CUBLAS_CALL_CUH_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "caffe_mining/common/cuda_context.hpp"

namespace caffe_mining {

/// cuBLAS failures are programming errors (bad sizes, a bad handle): stop loudly.
inline void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "caffe_mining: %s failed with cuBLAS status %d\n", what, static_cast<int>(status));
    std::abort();
  }
}

/// For one call: the context's GEMMs run on its stream with host scalars (alpha, beta); the handle's previous
/// stream and pointer mode come back at the end of the call.
class CublasCallScope {
 public:
  explicit CublasCallScope(const CudaContext& context) : handle_(context.cublas) {
    check_cublas(cublasGetStream(handle_, &saved_stream_), "cublasGetStream");
    check_cublas(cublasGetPointerMode(handle_, &saved_mode_), "cublasGetPointerMode");
    check_cublas(cublasSetStream(handle_, context.stream), "cublasSetStream");
    check_cublas(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode");
  }
  ~CublasCallScope() {
    check_cublas(cublasSetPointerMode(handle_, saved_mode_), "cublasSetPointerMode (restore)");
    check_cublas(cublasSetStream(handle_, saved_stream_), "cublasSetStream (restore)");
  }
  CublasCallScope(const CublasCallScope&) = delete;
  CublasCallScope& operator=(const CublasCallScope&) = delete;

 private:
  cublasHandle_t handle_;
  cudaStream_t saved_stream_ = nullptr;
  cublasPointerMode_t saved_mode_ = CUBLAS_POINTER_MODE_HOST;
};

/// Column-major C = alpha * op(A) * op(B) + beta * C (cuBLAS convention), host scalars.
inline cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t trans_a, cublasOperation_t trans_b, int m, int n,
                           int k, float alpha, const float* a, int lda, const float* b, int ldb, float beta, float* c,
                           int ldc) {
  return cublasSgemm(handle, trans_a, trans_b, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc);
}
inline cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t trans_a, cublasOperation_t trans_b, int m, int n,
                           int k, double alpha, const double* a, int lda, const double* b, int ldb, double beta,
                           double* c, int ldc) {
  return cublasDgemm(handle, trans_a, trans_b, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc);
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_COMMON_CUBLAS_CALL_CUH_
