// CUDA implementation of the HardNet loss core (see caffe_mining/hardnet.hpp for the math and the contracts).
// Everything stays on the device: distances by one cuBLAS GEMM, one block per row for the mining (row i and, with
// anchor_swap, column i of D), one block for the mean. The element math is the header's, shared with the CPU path.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "caffe_mining/hardnet.hpp"

namespace caffe_mining {

namespace {

constexpr int kThreads = 128;  // threads per block; a power of two for the tree reductions

int blocks_for(std::size_t count) { return static_cast<int>((count + kThreads - 1) / kThreads); }

// cuBLAS failures are programming errors (bad sizes, a handle in device pointer mode): stop loudly.
void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "caffe_mining::hardnet: %s failed with cuBLAS status %d\n", what, static_cast<int>(status));
    std::abort();
  }
}

// Column-major C = alpha * op(A) * op(B) + beta * C (cuBLAS convention), host scalars.
cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t trans_a, cublasOperation_t trans_b, int m, int n, int k,
                    float alpha, const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  return cublasSgemm(handle, trans_a, trans_b, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc);
}
cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t trans_a, cublasOperation_t trans_b, int m, int n, int k,
                    double alpha, const double* a, int lda, const double* b, int ldb, double beta, double* c,
                    int ldc) {
  return cublasDgemm(handle, trans_a, trans_b, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc);
}

__device__ __forceinline__ float atomic_add(float* address, float value) { return atomicAdd(address, value); }

__device__ __forceinline__ double atomic_add(double* address, double value) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 600
  return atomicAdd(address, value);
#else
  // Pre-Pascal has no native double atomicAdd: compare-and-swap loop.
  unsigned long long int* as_bits = reinterpret_cast<unsigned long long int*>(address);
  unsigned long long int old = *as_bits, assumed;
  do {
    assumed = old;
    old = atomicCAS(as_bits, assumed, __double_as_longlong(value + __longlong_as_double(assumed)));
  } while (assumed != old);
  return __longlong_as_double(old);
#endif
}

template <typename Dtype>
__global__ void squared_norms_kernel(int n, int dim, const Dtype* x, Dtype* sq_norm) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const Dtype* row = x + static_cast<std::size_t>(i) * dim;
  Dtype sum = Dtype(0);
  for (int k = 0; k < dim; ++k) sum += row[k] * row[k];
  sq_norm[i] = sum;
}

// dist holds a_i . p_j on entry, D_ij on exit.
template <typename Dtype>
__global__ void distance_kernel(int n, const Dtype* sq_norm_a, const Dtype* sq_norm_p, Dtype eps, Dtype* dist) {
  const std::size_t index = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= static_cast<std::size_t>(n) * n) return;
  const int i = static_cast<int>(index / n), j = static_cast<int>(index % n);
  dist[index] = hardnet_distance(sq_norm_a[i], sq_norm_p[j], dist[index], eps);
}

// One block per row i. Each thread scans a contiguous segment of candidates j; the block then reduces the count,
// the hardest candidate ((value, j) order, so the result does not depend on the reduction order) and the AVERAGE
// sums. RANDOM finds the rank-th valid candidate through the per-thread counts (exclusive prefix by thread 0).
template <typename Dtype>
__global__ void mine_rows_kernel(int n, const Dtype* labels, const Dtype* uniforms, HardNetOptions options,
                                 HardNetMining<Dtype> mining) {
  __shared__ int seg_count[kThreads];
  __shared__ int red_count[kThreads];
  __shared__ Dtype red_value[kThreads];
  __shared__ int red_index[kThreads];
  __shared__ Dtype red_loss[kThreads];
  __shared__ Dtype red_dpos[kThreads];
  __shared__ int owner_thread, owner_rank, chosen_index;

  const int i = blockIdx.x;
  const int t = threadIdx.x;
  const Dtype margin = static_cast<Dtype>(options.margin);
  const Dtype threshold = static_cast<Dtype>(options.duplicate_threshold);
  const bool swap = options.anchor_swap;
  const HardNetLossType type = options.loss_type;
  const bool average = options.batch_reduce == HardNetBatchReduce::kAverage;
  const Dtype pos = mining.dist[static_cast<std::size_t>(i) * n + i];

  const int seg = (n + kThreads - 1) / kThreads;
  const int begin = min(t * seg, n), end = min(begin + seg, n);
  int count = 0, hardest = -1;
  Dtype hardest_value = Dtype(0), loss_sum = Dtype(0), dpos_sum = Dtype(0);
  for (int j = begin; j < end; ++j) {
    const HardNetCandidate<Dtype> cand = hardnet_candidate(mining.dist, labels, n, i, j, threshold, swap);
    if (!cand.valid) continue;
    ++count;
    if (hardnet_harder(cand.value, j, hardest_value, hardest)) {
      hardest = j;
      hardest_value = cand.value;
    }
    if (average) {
      loss_sum += hardnet_row_loss(type, margin, pos, cand.value);
      dpos_sum += hardnet_row_loss_dpos(type, margin, pos, cand.value);
    }
  }
  seg_count[t] = count;
  red_count[t] = count;
  red_value[t] = hardest_value;
  red_index[t] = hardest;
  red_loss[t] = loss_sum;
  red_dpos[t] = dpos_sum;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (t < stride) {
      red_count[t] += red_count[t + stride];
      red_loss[t] += red_loss[t + stride];
      red_dpos[t] += red_dpos[t + stride];
      if (hardnet_harder(red_value[t + stride], red_index[t + stride], red_value[t], red_index[t])) {
        red_value[t] = red_value[t + stride];
        red_index[t] = red_index[t + stride];
      }
    }
    __syncthreads();
  }
  const int total = red_count[0];  // uniform over the block

  if (options.batch_reduce == HardNetBatchReduce::kRandom && total > 0) {
    if (t == 0) {
      int rank = hardnet_random_rank(uniforms[i], total);
      int owner = 0;
      while (rank >= seg_count[owner]) rank -= seg_count[owner++];
      owner_thread = owner;
      owner_rank = rank;
    }
    __syncthreads();
    if (t == owner_thread) {
      int rank = owner_rank;
      for (int j = begin; j < end; ++j) {
        if (hardnet_candidate(mining.dist, labels, n, i, j, threshold, swap).valid && rank-- == 0) {
          chosen_index = j;
          break;
        }
      }
    }
    __syncthreads();
  }

  if (t != 0) return;
  int chosen = red_index[0];
  if (options.batch_reduce == HardNetBatchReduce::kRandom && total > 0) chosen = chosen_index;
  Dtype row_loss = Dtype(0), dpos = Dtype(0), dneg = Dtype(0), neg = Dtype(0);
  int swapped = 0;
  if (chosen >= 0) {
    const HardNetCandidate<Dtype> cand = hardnet_candidate(mining.dist, labels, n, i, chosen, threshold, swap);
    neg = cand.value;
    swapped = cand.swapped ? 1 : 0;
    if (average) {
      row_loss = red_loss[0] / Dtype(total);
      dpos = red_dpos[0] / Dtype(total);
    } else {
      row_loss = hardnet_row_loss(type, margin, pos, neg);
      dpos = hardnet_row_loss_dpos(type, margin, pos, neg);
      dneg = hardnet_row_loss_dneg(type, margin, pos, neg);
    }
  }
  mining.pos_dist[i] = pos;
  mining.neg_dist[i] = neg;
  mining.neg_index[i] = chosen;
  mining.neg_swapped[i] = swapped;
  mining.neg_count[i] = total;
  mining.row_loss[i] = row_loss;
  mining.dloss_dpos[i] = dpos;
  mining.dloss_dneg[i] = dneg;
}

// One block: loss = mean of the row losses over the non-empty rows.
template <typename Dtype>
__global__ void mean_loss_kernel(int n, const Dtype* row_loss, const int* neg_count, int* valid_rows, Dtype* loss) {
  __shared__ Dtype red_loss[kThreads];
  __shared__ int red_rows[kThreads];
  const int t = threadIdx.x;
  Dtype sum = Dtype(0);
  int rows = 0;
  for (int i = t; i < n; i += kThreads) {
    sum += row_loss[i];
    rows += neg_count[i] > 0 ? 1 : 0;
  }
  red_loss[t] = sum;
  red_rows[t] = rows;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (t < stride) {
      red_loss[t] += red_loss[t + stride];
      red_rows[t] += red_rows[t + stride];
    }
    __syncthreads();
  }
  if (t == 0) {
    valid_rows[0] = red_rows[0];
    loss[0] = red_rows[0] > 0 ? red_loss[0] / Dtype(red_rows[0]) : Dtype(0);
  }
}

template <typename Dtype>
__device__ __forceinline__ Dtype gradient_scale(Dtype loss_weight, const int* valid_rows) {
  return valid_rows[0] > 0 ? loss_weight / Dtype(valid_rows[0]) : Dtype(0);
}

// MIN / RANDOM backward, one block per row i, threads over the dim components. Rows scatter into other rows
// (the chosen negative's p_j or a_j), so every update is atomic; the diffs are zeroed before.
template <typename Dtype>
__global__ void sparse_backward_kernel(int dim, const Dtype* anchor, const Dtype* positive,
                                       HardNetMining<Dtype> mining, Dtype loss_weight, Dtype* anchor_diff,
                                       Dtype* positive_diff) {
  const int i = blockIdx.x;
  if (mining.neg_count[i] == 0) return;
  const Dtype scale = gradient_scale(loss_weight, mining.valid_rows);
  const Dtype pos_coeff = hardnet_safe_div(scale * mining.dloss_dpos[i], mining.pos_dist[i]);
  const Dtype neg_coeff = hardnet_safe_div(scale * mining.dloss_dneg[i], mining.neg_dist[i]);
  const int j = mining.neg_index[i];
  const bool swapped = mining.neg_swapped[i] != 0;
  const std::size_t row_i = static_cast<std::size_t>(i) * dim, row_j = static_cast<std::size_t>(j) * dim;
  for (int k = threadIdx.x; k < dim; k += blockDim.x) {
    const Dtype pos_diff = anchor[row_i + k] - positive[row_i + k];
    // The negative's distance is D_ji = d(a_j, p_i) when swapped, else D_ij = d(a_i, p_j).
    const std::size_t neg_a = swapped ? row_j : row_i, neg_p = swapped ? row_i : row_j;
    const Dtype neg_diff = anchor[neg_a + k] - positive[neg_p + k];
    if (anchor_diff != nullptr) {
      atomic_add(anchor_diff + row_i + k, pos_coeff * pos_diff);
      if (neg_coeff != Dtype(0)) atomic_add(anchor_diff + neg_a + k, neg_coeff * neg_diff);
    }
    if (positive_diff != nullptr) {
      atomic_add(positive_diff + row_i + k, -pos_coeff * pos_diff);
      if (neg_coeff != Dtype(0)) atomic_add(positive_diff + neg_p + k, -neg_coeff * neg_diff);
    }
  }
}

// AVERAGE backward, one thread per (i, j): V_ij = (d loss / d D_ij) / D_ij, scale included.
template <typename Dtype>
__global__ void average_weight_kernel(int n, const Dtype* labels, HardNetOptions options,
                                      HardNetMining<Dtype> mining, Dtype loss_weight, Dtype* weight) {
  const std::size_t index = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= static_cast<std::size_t>(n) * n) return;
  const int i = static_cast<int>(index / n), j = static_cast<int>(index % n);
  Dtype w;
  if (i == j) {
    w = mining.neg_count[i] > 0 ? mining.dloss_dpos[i] : Dtype(0);
  } else {
    w = hardnet_average_weight(mining.dist, labels, mining.pos_dist, mining.neg_count, n, i, j, options.loss_type,
                               static_cast<Dtype>(options.margin), static_cast<Dtype>(options.duplicate_threshold),
                               options.anchor_swap);
  }
  weight[index] = hardnet_safe_div(gradient_scale(loss_weight, mining.valid_rows) * w, mining.dist[index]);
}

// row_sum_i = sum_j V_ij, col_sum_i = sum_j V_ji; one thread per i.
template <typename Dtype>
__global__ void weight_sums_kernel(int n, const Dtype* weight, Dtype* row_sum, Dtype* col_sum) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  Dtype rows = Dtype(0), cols = Dtype(0);
  for (int j = 0; j < n; ++j) {
    rows += weight[static_cast<std::size_t>(i) * n + j];
    cols += weight[static_cast<std::size_t>(j) * n + i];
  }
  row_sum[i] = rows;
  col_sum[i] = cols;
}

// out_ik = diag_i * x_ik.
template <typename Dtype>
__global__ void scale_rows_kernel(int n, int dim, const Dtype* diag, const Dtype* x, Dtype* out) {
  const std::size_t index = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= static_cast<std::size_t>(n) * dim) return;
  out[index] = diag[index / dim] * x[index];
}

}  // namespace

template <typename Dtype>
void hardnet_forward_gpu(cublasContext* cublas, CUstream_st* stream, int n, int dim, const Dtype* anchor,
                         const Dtype* positive, const Dtype* labels, const Dtype* uniforms,
                         const HardNetOptions& options, const HardNetMining<Dtype>& mining, Dtype* scratch,
                         Dtype* loss) {
  Dtype* sq_norm_a = scratch;
  Dtype* sq_norm_p = scratch + n;
  squared_norms_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(n, dim, anchor, sq_norm_a);
  squared_norms_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(n, dim, positive, sq_norm_p);
  // Row-major D = A P^T is column-major D^T = P A^T: op(P buffer) = T, op(A buffer) = N.
  check_cublas(gemm(cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, dim, Dtype(1), positive, dim, anchor, dim, Dtype(0),
                    mining.dist, n),
               "A * P^T");
  distance_kernel<Dtype><<<blocks_for(static_cast<std::size_t>(n) * n), kThreads, 0, stream>>>(
      n, sq_norm_a, sq_norm_p, static_cast<Dtype>(options.eps), mining.dist);
  mine_rows_kernel<Dtype><<<n, kThreads, 0, stream>>>(n, labels, uniforms, options, mining);
  mean_loss_kernel<Dtype><<<1, kThreads, 0, stream>>>(n, mining.row_loss, mining.neg_count, mining.valid_rows, loss);
}

template <typename Dtype>
void hardnet_backward_gpu(cublasContext* cublas, CUstream_st* stream, int n, int dim, const Dtype* anchor,
                          const Dtype* positive, const Dtype* labels, const HardNetOptions& options,
                          const HardNetMining<Dtype>& mining, Dtype loss_weight, Dtype* scratch, Dtype* anchor_diff,
                          Dtype* positive_diff) {
  const std::size_t elements = static_cast<std::size_t>(n) * dim;
  if (anchor_diff == nullptr && positive_diff == nullptr) return;
  if (options.batch_reduce != HardNetBatchReduce::kAverage) {
    if (anchor_diff != nullptr) cudaMemsetAsync(anchor_diff, 0, elements * sizeof(Dtype), stream);
    if (positive_diff != nullptr) cudaMemsetAsync(positive_diff, 0, elements * sizeof(Dtype), stream);
    sparse_backward_kernel<Dtype><<<n, kThreads, 0, stream>>>(dim, anchor, positive, mining, loss_weight,
                                                              anchor_diff, positive_diff);
    return;
  }
  // AVERAGE: dA = diag(V 1) A - V P, dP = diag(V^T 1) P - V^T A.
  const std::size_t nn = static_cast<std::size_t>(n) * n;
  Dtype* weight = scratch;
  Dtype* row_sum = scratch + nn;
  Dtype* col_sum = row_sum + n;
  average_weight_kernel<Dtype><<<blocks_for(nn), kThreads, 0, stream>>>(n, labels, options, mining, loss_weight,
                                                                        weight);
  weight_sums_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(n, weight, row_sum, col_sum);
  if (anchor_diff != nullptr) {
    scale_rows_kernel<Dtype><<<blocks_for(elements), kThreads, 0, stream>>>(n, dim, row_sum, anchor, anchor_diff);
    // Row-major dA -= V P is column-major dA^T -= P^T V^T: both buffers as they are (op N).
    check_cublas(gemm(cublas, CUBLAS_OP_N, CUBLAS_OP_N, dim, n, n, Dtype(-1), positive, dim, weight, n, Dtype(1),
                      anchor_diff, dim),
                 "V * P");
  }
  if (positive_diff != nullptr) {
    scale_rows_kernel<Dtype><<<blocks_for(elements), kThreads, 0, stream>>>(n, dim, col_sum, positive,
                                                                            positive_diff);
    // Row-major dP -= V^T A is column-major dP^T -= A^T V: op(V buffer) = T.
    check_cublas(gemm(cublas, CUBLAS_OP_N, CUBLAS_OP_T, dim, n, n, Dtype(-1), anchor, dim, weight, n, Dtype(1),
                      positive_diff, dim),
                 "V^T * A");
  }
}

template void hardnet_forward_gpu<float>(cublasContext*, CUstream_st*, int, int, const float*, const float*,
                                         const float*, const float*, const HardNetOptions&,
                                         const HardNetMining<float>&, float*, float*);
template void hardnet_forward_gpu<double>(cublasContext*, CUstream_st*, int, int, const double*, const double*,
                                          const double*, const double*, const HardNetOptions&,
                                          const HardNetMining<double>&, double*, double*);
template void hardnet_backward_gpu<float>(cublasContext*, CUstream_st*, int, int, const float*, const float*,
                                          const float*, const HardNetOptions&, const HardNetMining<float>&, float,
                                          float*, float*, float*);
template void hardnet_backward_gpu<double>(cublasContext*, CUstream_st*, int, int, const double*, const double*,
                                           const double*, const HardNetOptions&, const HardNetMining<double>&,
                                           double, double*, double*, double*);

}  // namespace caffe_mining
