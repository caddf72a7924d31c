// CUDA implementation of the TripletLoss core (see caffe_mining/triplet.hpp for the math and the contracts).
// Kernels are thin loops over the header's host/device element functions, so the decisions and the per-row sums
// are the CPU's own steps: squared norms (a warp per row), one cuBLAS SYRK, each unordered pair's distance written
// to (i, j) and (j, i) by one thread (triplet_distance), one thread per anchor (triplet_anchor_step), the loss as a
// fixed-order tree sum; the backward builds S entry by entry (triplet_gradient_weight), its row sums one thread per
// row in increasing j, then one GEMM. No floating-point atomics: a rerun gives the same bits.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <limits>

#include "caffe_mining/common/cublas_call.cuh"
#include "caffe_mining/common/launch.hpp"
#include "caffe_mining/distances/squared_norm.hpp"
#include "caffe_mining/triplet.hpp"
#include "caffe_mining/triplet_gpu_steps.hpp"

namespace caffe_mining {

namespace {

// Column-major upper triangle of C = A^T A, A = X^T (dim x n, lda = dim): the row-major lower triangle of X X^T.
cublasStatus_t syrk(cublasHandle_t handle, int n, int dim, const float* x, float* c) {
  const float one = 1.0f, zero = 0.0f;
  return cublasSsyrk(handle, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_T, n, dim, &one, x, dim, &zero, c, n);
}
cublasStatus_t syrk(cublasHandle_t handle, int n, int dim, const double* x, double* c) {
  const double one = 1.0, zero = 0.0;
  return cublasDsyrk(handle, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_T, n, dim, &one, x, dim, &zero, c, n);
}

// Row-major G += -S X (S symmetric n x n): column-major G^T (dim x n) += -X^T S.
cublasStatus_t gemm_sub(cublasHandle_t handle, int n, int dim, const float* x, const float* s, float* g) {
  const float minus_one = -1.0f, one = 1.0f;
  return cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, dim, n, n, &minus_one, x, dim, s, n, &one, g, dim);
}
cublasStatus_t gemm_sub(cublasHandle_t handle, int n, int dim, const double* x, const double* s, double* g) {
  const double minus_one = -1.0, one = 1.0;
  return cublasDgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, dim, n, n, &minus_one, x, dim, s, n, &one, g, dim);
}

// |x_i|^2: a warp per row (warp_squared_norm's order).
template <typename Dtype>
__global__ void squared_norms_kernel(int n, int dim, const Dtype* x, Dtype* sq_norm) {
  for (int row = (blockIdx.x * blockDim.x + threadIdx.x) / kWarp; row < n;
       row += gridDim.x * blockDim.x / kWarp) {
    const Dtype* x_row = x + static_cast<std::size_t>(row) * dim;
    const Dtype sum = warp_squared_norm<Dtype>(dim, [x_row](int k) { return x_row[k]; });
    if (threadIdx.x % kWarp == 0) sq_norm[row] = sum;
  }
}

// One block: *overflow = 1 when a norm is NaN or inf or 4 max |x_i|^2 is not finite (the header's non-finite rule),
// else 0 (kMax: the largest finite Dtype).
template <typename Dtype>
__global__ void overflow_kernel(int n, const Dtype* sq_norm, Dtype kMax, Dtype* overflow) {
  __shared__ Dtype largest[kThreads];
  __shared__ int bad[kThreads];
  Dtype m = Dtype(0);
  int b = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    if (!(sq_norm[i] <= kMax)) b = 1;
    else if (sq_norm[i] > m) m = sq_norm[i];
  }
  largest[threadIdx.x] = m;
  bad[threadIdx.x] = b;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      largest[threadIdx.x] = largest[threadIdx.x] > largest[threadIdx.x + half] ? largest[threadIdx.x]
                                                                                : largest[threadIdx.x + half];
      bad[threadIdx.x] |= bad[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *overflow = (bad[0] || !(Dtype(4) * largest[0] <= kMax)) ? Dtype(1) : Dtype(0);
}

// The pairs' distances (triplet_gpu::pair_distance).
template <typename Dtype>
__global__ void distances_kernel(int n, const Dtype* sq_norm, const Dtype* overflow, Dtype eps, bool squared,
                                 Dtype* dist) {
  const std::size_t count = static_cast<std::size_t>(n) * n;
  const bool bad = *overflow != Dtype(0);
  for (std::size_t e = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    triplet_gpu::pair_distance(n, e, sq_norm, bad, eps, squared, dist);
  }
}

// One thread per anchor (triplet_gpu::anchor: the CPU's per-anchor step).
template <typename Dtype>
__global__ void anchors_kernel(int n, TripletMiner miner, TripletRowLoss<Dtype> term, const Dtype* labels,
                               const Dtype* overflow, TripletMining<Dtype> mining) {
  const bool bad = *overflow != Dtype(0);
  for (int a = blockIdx.x * blockDim.x + threadIdx.x; a < n; a += gridDim.x * blockDim.x) {
    triplet_gpu::anchor(miner, term, n, a, labels, bad, mining);
  }
}

// One block: E = sum of row_loss / sum of row_terms, both summed in a fixed tree order.
template <typename Dtype>
__global__ void loss_kernel(int n, const Dtype* overflow, TripletMining<Dtype> mining, Dtype* loss) {
  __shared__ Dtype loss_sum[kThreads];
  __shared__ long long terms_sum[kThreads];
  Dtype l = Dtype(0);
  long long t = 0;
  for (int a = threadIdx.x; a < n; a += blockDim.x) {
    l += mining.row_loss[a];
    t += mining.row_terms[a];
  }
  loss_sum[threadIdx.x] = l;
  terms_sum[threadIdx.x] = t;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      loss_sum[threadIdx.x] += loss_sum[threadIdx.x + half];
      terms_sum[threadIdx.x] += terms_sum[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if (*overflow != Dtype(0)) {
      mining.terms[0] = -1;
      *loss = Dtype(NAN);
    } else {
      mining.terms[0] = terms_sum[0];
      *loss = terms_sum[0] > 0 ? loss_sum[0] / static_cast<Dtype>(terms_sum[0]) : Dtype(0);
    }
  }
}

// S entry by entry (triplet_gpu::gradient_weight).
template <typename Dtype>
__global__ void gradient_weights_kernel(int n, const Dtype* dist, const Dtype* weight, const long long* terms,
                                        Dtype loss_weight, bool squared, Dtype* s) {
  const long long t = terms[0];
  const std::size_t count = static_cast<std::size_t>(n) * n;
  for (std::size_t e = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    s[e] = triplet_gpu::gradient_weight(n, e, dist, weight, t, loss_weight, squared);
  }
}

// Row sums of S in increasing j (the CPU's order), one thread per row.
template <typename Dtype>
__global__ void row_sums_kernel(int n, const Dtype* s, Dtype* row_sum) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    Dtype sum = Dtype(0);
    for (int j = 0; j < n; ++j) sum += s[static_cast<std::size_t>(i) * n + j];
    row_sum[i] = sum;
  }
}

// G = diag(S 1) X before the GEMM; NaN everywhere for non-finite input (T = -1), which the GEMM keeps.
template <typename Dtype>
__global__ void gradient_init_kernel(int n, int dim, const Dtype* x, const Dtype* row_sum, const long long* terms,
                                     Dtype* g) {
  const std::size_t count = static_cast<std::size_t>(n) * dim;
  const bool not_finite = terms[0] < 0;
  for (std::size_t e = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    g[e] = not_finite ? Dtype(NAN) : row_sum[e / dim] * x[e];
  }
}

}  // namespace

template <typename Dtype>
void triplet_forward_gpu(const CudaContext& context, int n, int dim, const Dtype* embedding, const Dtype* labels,
                         const TripletOptions& options, const TripletMining<Dtype>& mining, void* workspace,
                         Dtype* loss) {
  Dtype* scratch = static_cast<Dtype*>(workspace);
  CublasCallScope scope(context);
  cudaStream_t stream = context.stream;
  const std::size_t nn = static_cast<std::size_t>(n);
  Dtype* sq_norm = scratch;
  Dtype* overflow = scratch + nn + nn * nn;  // the backward's row sums, free during the forward
  squared_norms_kernel<<<blocks_for(nn * kWarp), kThreads, 0, stream>>>(n, dim, embedding, sq_norm);
  overflow_kernel<<<1, kThreads, 0, stream>>>(n, sq_norm, std::numeric_limits<Dtype>::max(), overflow);
  check_cublas(syrk(context.cublas, n, dim, embedding, mining.dist), "syrk");
  distances_kernel<<<blocks_for(nn * nn), kThreads, 0, stream>>>(n, sq_norm, overflow,
                                                                 static_cast<Dtype>(options.eps), options.squared,
                                                                 mining.dist);
  const TripletRowLoss<Dtype> term = {static_cast<Dtype>(options.margin), options.soft_margin};
  anchors_kernel<<<blocks_for(nn), kThreads, 0, stream>>>(n, options.mining, term, labels, overflow, mining);
  loss_kernel<<<1, kThreads, 0, stream>>>(n, overflow, mining, loss);
}

template <typename Dtype>
void triplet_backward_gpu(const CudaContext& context, int n, int dim, const Dtype* embedding,
                          const TripletOptions& options, const TripletMining<Dtype>& mining, Dtype loss_weight,
                          void* workspace, Dtype* embedding_diff) {
  Dtype* scratch = static_cast<Dtype*>(workspace);
  CublasCallScope scope(context);
  cudaStream_t stream = context.stream;
  const std::size_t nn = static_cast<std::size_t>(n);
  Dtype* s = scratch + nn;
  Dtype* row_sum = s + nn * nn;
  gradient_weights_kernel<<<blocks_for(nn * nn), kThreads, 0, stream>>>(n, mining.dist, mining.weight, mining.terms,
                                                                        loss_weight, options.squared, s);
  row_sums_kernel<<<blocks_for(nn), kThreads, 0, stream>>>(n, s, row_sum);
  gradient_init_kernel<<<blocks_for(nn * dim), kThreads, 0, stream>>>(n, dim, embedding, row_sum, mining.terms,
                                                                      embedding_diff);
  check_cublas(gemm_sub(context.cublas, n, dim, embedding, s, embedding_diff), "gemm");
}

template void triplet_forward_gpu<float>(const CudaContext&, int, int, const float*, const float*,
                                         const TripletOptions&, const TripletMining<float>&, void*, float*);
template void triplet_forward_gpu<double>(const CudaContext&, int, int, const double*, const double*,
                                          const TripletOptions&, const TripletMining<double>&, void*, double*);
template void triplet_backward_gpu<float>(const CudaContext&, int, int, const float*, const TripletOptions&,
                                          const TripletMining<float>&, float, void*, float*);
template void triplet_backward_gpu<double>(const CudaContext&, int, int, const double*, const TripletOptions&,
                                           const TripletMining<double>&, double, void*, double*);

}  // namespace caffe_mining
