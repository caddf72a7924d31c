// CUDA path of the MarginLoss core (see caffe_mining/margin.hpp for the math, margin_gpu_steps.hpp for the steps):
// every kernel is a grid-stride loop over one step of margin_gpu_steps.hpp, the serial ones a single thread. The
// whole pass is queued on the caller's stream with no host synchronisation; the decisions the steps make from
// counts (non-finite input, C = 0) are read on the device.
#include "caffe_mining/margin.hpp"
#include "caffe_mining/common/launch.hpp"
#include "caffe_mining/margin_gpu_steps.hpp"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace caffe_mining {

namespace {

#define CM_GRID_STRIDE(index, count)                                                                   \
  for (std::size_t index = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < (count); \
       index += static_cast<std::size_t>(blockDim.x) * gridDim.x)

template <typename Dtype>
__global__ void check_finite_kernel(std::size_t count, std::size_t betas, const Dtype* embedding, const Dtype* beta,
                                    int* flag) {
  CM_GRID_STRIDE(k, count + betas) { margin_gpu::check_finite(k, count, embedding, beta, flag); }
}

template <typename Dtype>
__global__ void distance_kernel(int n, int dim, const Dtype* embedding, Dtype eps, Dtype* dist, int* flag) {
  CM_GRID_STRIDE(k, static_cast<std::size_t>(n) * n) {
    margin_gpu::distance(static_cast<int>(k / n), static_cast<int>(k % n), n, dim, embedding, eps, dist, flag);
  }
}

template <typename Dtype>
__global__ void anchor_row_kernel(int n, int dim, const Dtype* dist, const Dtype* labels, NegativeSampler sampler,
                                  double cutoff, double nonzero_loss_cutoff, int negatives_per_positive,
                                  const int* flag, double* cumulative, double* totals, int* anchor_count) {
  CM_GRID_STRIDE(i, static_cast<std::size_t>(n)) {
    margin_gpu::anchor_row(static_cast<int>(i), n, dim, dist, labels, sampler, cutoff, nonzero_loss_cutoff,
                           negatives_per_positive, flag, cumulative, totals, anchor_count);
  }
}

__global__ void offsets_kernel(int n, int capacity, const int* flag, int* anchor_count, int* anchor_offset,
                               int* counts) {
  if (blockIdx.x == 0 && threadIdx.x == 0) margin_gpu::offsets(n, capacity, flag, anchor_count, anchor_offset, counts);
}

template <typename Dtype>
__global__ void anchor_draws_kernel(int n, const Dtype* dist, const Dtype* labels, const double* cumulative,
                                    const double* totals, int negatives_per_positive, uint64_t seed,
                                    uint64_t iteration, MarginMining<Dtype> mining) {
  CM_GRID_STRIDE(i, static_cast<std::size_t>(n)) {
    margin_gpu::anchor_draws(static_cast<int>(i), n, dist, labels, cumulative, totals, negatives_per_positive, seed,
                             iteration, mining);
  }
}

template <typename Dtype>
__global__ void loss_kernel(const Dtype* beta, const Dtype* labels, int num_classes, Dtype margin, Dtype nu,
                            MarginMining<Dtype> mining, Dtype* loss) {
  if (blockIdx.x == 0 && threadIdx.x == 0) margin_gpu::loss(beta, labels, num_classes, margin, nu, mining, loss);
}

template <typename Dtype>
__global__ void beta_gradient_kernel(int betas, const Dtype* beta, const Dtype* labels, int num_classes,
                                     Dtype margin, Dtype nu, MarginMining<Dtype> mining, Dtype loss_weight,
                                     Dtype* beta_diff) {
  CM_GRID_STRIDE(c, static_cast<std::size_t>(betas)) {
    margin_gpu::beta_gradient(static_cast<int>(c), beta, labels, num_classes, margin, nu, mining, loss_weight,
                              beta_diff);
  }
}

template <typename Dtype>
__global__ void pair_coefficient_kernel(int n, int dim, const Dtype* embedding, const Dtype* beta,
                                        const Dtype* labels, int num_classes, Dtype margin, Dtype eps,
                                        MarginMining<Dtype> mining, Dtype loss_weight, Dtype* coefficient) {
  CM_GRID_STRIDE(k, static_cast<std::size_t>(n) * n) {
    margin_gpu::pair_coefficient(static_cast<int>(k / n), static_cast<int>(k % n), n, dim, embedding, beta, labels,
                                 num_classes, margin, eps, mining, loss_weight, coefficient);
  }
}

template <typename Dtype>
__global__ void gradient_kernel(int n, int dim, const Dtype* embedding, const Dtype* coefficient, const int* counts,
                                Dtype* embedding_diff) {
  CM_GRID_STRIDE(k, static_cast<std::size_t>(n) * dim) {
    margin_gpu::gradient(static_cast<int>(k / dim), static_cast<int>(k % dim), n, dim, embedding, coefficient,
                         counts, embedding_diff);
  }
}

template <typename T>
T* piece(void* workspace, std::size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(workspace) + offset);
}

}  // namespace

template <typename Dtype>
void margin_forward_gpu(const CudaContext& context, int n, int dim, const Dtype* embedding, const Dtype* labels,
                        const Dtype* beta, const MarginOptions& options, uint64_t iteration, int capacity,
                        const MarginMining<Dtype>& mining, void* workspace, Dtype* loss) {
  cudaStream_t stream = context.stream;
  const std::size_t count = static_cast<std::size_t>(n) * dim;
  const std::size_t betas = options.num_classes > 0 ? options.num_classes : 1;
  Dtype* dist = piece<Dtype>(workspace, 0);
  double* cumulative = piece<double>(workspace, margin_workspace_offset<Dtype>(n, 1));
  double* totals = piece<double>(workspace, margin_workspace_offset<Dtype>(n, 2));
  int* flag = piece<int>(workspace, margin_workspace_offset<Dtype>(n, 3));
  const std::size_t pairs = static_cast<std::size_t>(n) * n;
  cudaMemsetAsync(flag, 0, sizeof(int), stream);
  check_finite_kernel<Dtype><<<blocks_for(count + betas), kThreads, 0, stream>>>(count, betas, embedding, beta, flag);
  distance_kernel<Dtype><<<blocks_for(pairs), kThreads, 0, stream>>>(n, dim, embedding,
                                                                      static_cast<Dtype>(options.eps), dist, flag);
  anchor_row_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(
      n, dim, dist, labels, options.sampler, options.cutoff, options.nonzero_loss_cutoff,
      options.negatives_per_positive, flag, cumulative, totals, mining.anchor_count);
  offsets_kernel<<<1, 1, 0, stream>>>(n, capacity, flag, mining.anchor_count, mining.anchor_offset, mining.counts);
  anchor_draws_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(
      n, dist, labels, cumulative, totals, options.negatives_per_positive, options.seed, iteration, mining);
  loss_kernel<Dtype><<<1, 1, 0, stream>>>(beta, labels, options.num_classes, static_cast<Dtype>(options.margin),
                                          static_cast<Dtype>(options.nu), mining, loss);
}

template <typename Dtype>
void margin_backward_gpu(const CudaContext& context, int n, int dim, const Dtype* embedding, const Dtype* labels,
                         const Dtype* beta, const MarginOptions& options, const MarginMining<Dtype>& mining,
                         Dtype loss_weight, void* workspace, Dtype* embedding_diff, Dtype* beta_diff) {
  cudaStream_t stream = context.stream;
  const int betas = options.num_classes > 0 ? options.num_classes : 1;
  const Dtype margin = static_cast<Dtype>(options.margin), nu = static_cast<Dtype>(options.nu);
  if (beta_diff) {
    beta_gradient_kernel<Dtype><<<blocks_for(betas), kThreads, 0, stream>>>(
        betas, beta, labels, options.num_classes, margin, nu, mining, loss_weight, beta_diff);
  }
  if (!embedding_diff) return;
  Dtype* coefficient = piece<Dtype>(workspace, 0);
  pair_coefficient_kernel<Dtype><<<blocks_for(static_cast<std::size_t>(n) * n), kThreads, 0, stream>>>(
      n, dim, embedding, beta, labels, options.num_classes, margin, static_cast<Dtype>(options.eps), mining,
      loss_weight, coefficient);
  gradient_kernel<Dtype><<<blocks_for(static_cast<std::size_t>(n) * dim), kThreads, 0, stream>>>(
      n, dim, embedding, coefficient, mining.counts, embedding_diff);
}

#define CAFFE_MINING_INSTANTIATE_MARGIN_GPU(Dtype)                                                           \
  template void margin_forward_gpu<Dtype>(const CudaContext&, int, int, const Dtype*, const Dtype*,           \
                                          const Dtype*, const MarginOptions&, uint64_t, int,                  \
                                          const MarginMining<Dtype>&, void*, Dtype*);                         \
  template void margin_backward_gpu<Dtype>(const CudaContext&, int, int, const Dtype*, const Dtype*,          \
                                           const Dtype*, const MarginOptions&, const MarginMining<Dtype>&,    \
                                           Dtype, void*, Dtype*, Dtype*);
CAFFE_MINING_INSTANTIATE_MARGIN_GPU(float)
CAFFE_MINING_INSTANTIATE_MARGIN_GPU(double)
#undef CAFFE_MINING_INSTANTIATE_MARGIN_GPU

}  // namespace caffe_mining
