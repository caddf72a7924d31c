// CUDA path of the MiningContrastiveLoss core (see caffe_mining/contrastive_mining.hpp).
//
// The selection runs on the device with no host synchronisation and no sort: per kind, an MSD radix
// select over the distinct composite keys (hardness_key(cost), inverted index) finds the k-th hardest pair,
// and the pairs at least as hard are picked -- the same set the CPU's nth_element in the harder_pair order
// keeps. The steps are the radix:: functions of the header (the CPU tests run them serially); here each
// pass is a block-shared histogram kernel and a one-thread-per-kind choose_digit kernel.
// sizeof(Dtype) + index_bytes_for(n) passes, each O(n).
#include "caffe_mining/contrastive_mining.hpp"

#include <cuda_runtime.h>

#include <cstdint>

#include "caffe_mining/common/launch.hpp"
#include "caffe_mining/common/math.hpp"
#include "caffe_mining/distances/squared_norm.hpp"
#include "caffe_mining/losses/contrastive_pair.hpp"

namespace caffe_mining {

namespace {

using radix::KindSelection;
using radix::kBins;
using radix::kKinds;
using SelectionWorkspace = ContrastiveGpuWorkspace;

// One warp per pair: diff = a - b, dist_sq (warp_squared_norm's order), cost; count the similar pairs, flag a
// non-finite dist_sq.
template <typename Dtype>
__global__ void pair_cost_kernel(int n, int dim, const Dtype* a, const Dtype* b, const Dtype* sim,
                                 Dtype margin, bool legacy, Dtype* diff, Dtype* dist_sq, Dtype* cost,
                                 int* picked, int* num_similar, int* nonfinite) {
  const int lane = threadIdx.x % kWarp;
  for (int i = (blockIdx.x * blockDim.x + threadIdx.x) / kWarp; i < n; i += gridDim.x * blockDim.x / kWarp) {
    const size_t row = static_cast<size_t>(i) * dim;
    // i is the same for the whole warp, so all 32 lanes take part in the shuffles.
    const Dtype sum = warp_squared_norm<Dtype>(dim, [&](int k) {
      const Dtype d = a[row + k] - b[row + k];
      diff[row + k] = d;
      return d;
    });
    if (lane == 0) {
      const bool similar = sim[i] != Dtype(0);
      dist_sq[i] = sum;
      cost[i] = contrastive_cost(sum, similar, margin, legacy);
      picked[i] = 0;
      if (similar) atomicAdd(num_similar, 1);
      if (!math::is_finite(sum)) *nonfinite = 1;  // every writer stores 1
    }
  }
}

__global__ void start_selection_kernel(int n, int num_picked, SelectionWorkspace* ws) {
  int k_similar, k_dissimilar;
  split_picked_pairs(ws->num_similar, n - ws->num_similar, num_picked, &k_similar, &k_dissimilar);
  radix::start(&ws->kind[0], k_dissimilar);
  radix::start(&ws->kind[1], k_similar);
}

// Histogram of digit `pass` among the pairs of each kind that match that kind's prefix.
template <typename Dtype>
__global__ void digit_histogram_kernel(int n, const Dtype* sim, const Dtype* cost, int pass,
                                       int key_bytes, int index_bytes, SelectionWorkspace* ws) {
  __shared__ unsigned int local[kKinds * kBins];
  __shared__ KindSelection kind_sel[kKinds];  // shared, not a per-thread array: indexed by c without a stack spill
  for (int t = threadIdx.x; t < kKinds * kBins; t += blockDim.x) local[t] = 0;
  if (threadIdx.x < kKinds) kind_sel[threadIdx.x] = ws->kind[threadIdx.x];
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int c = sim[i] != Dtype(0) ? 1 : 0;
    const KindSelection& s = kind_sel[c];
    if (s.remaining <= 0) continue;
    const uint64_t key = hardness_key(cost[i]);
    const uint32_t inv = radix::inverted_index(i, index_bytes);
    if (!radix::matches_prefix(s, key, inv)) continue;
    atomicAdd(&local[c * kBins + radix::composite_digit(key, inv, pass, key_bytes, index_bytes)], 1u);
  }
  __syncthreads();
  for (int t = threadIdx.x; t < kKinds * kBins; t += blockDim.x) {
    if (local[t]) atomicAdd(&ws->histogram[t], local[t]);
  }
}

// One thread per kind: the digit that holds the remaining-th hardest matching pair; clears the histogram.
__global__ void choose_digit_kernel(int pass, int key_bytes, int index_bytes, SelectionWorkspace* ws) {
  const int c = threadIdx.x;
  if (c >= kKinds) return;
  unsigned int* histogram = ws->histogram + c * kBins;
  radix::choose_digit(&ws->kind[c], histogram, pass, key_bytes, index_bytes);
  for (int d = 0; d < kBins; ++d) histogram[d] = 0;
}

// After the last pass each prefix is the full composite key of the kind's k-th hardest pair.
template <typename Dtype>
__global__ void mark_picked_kernel(int n, const Dtype* sim, const Dtype* cost, int index_bytes,
                                   const SelectionWorkspace* ws, int* picked) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const KindSelection& s = ws->kind[sim[i] != Dtype(0) ? 1 : 0];
    const uint64_t key = hardness_key(cost[i]);
    picked[i] = radix::at_least_threshold(s, key, radix::inverted_index(i, index_bytes));
  }
}

// One block, fixed summation order: the loss is deterministic (no floating-point atomics). NaN when some
// dist_sq is not finite.
template <typename Dtype>
__global__ void picked_loss_kernel(int n, int num_picked, const Dtype* cost, const int* picked,
                                   const int* nonfinite, Dtype* loss) {
  __shared__ Dtype partial[kThreads];
  Dtype sum(0);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    if (picked[i]) sum += cost[i];
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = contrastive_mean_cost(partial[0], num_picked, *nonfinite == 0);
}

__global__ void set_int_kernel(int* out, int value) { *out = value; }

template <typename Dtype>
__global__ void invalid_label_kernel(const Dtype* sim, int n, int* first_invalid) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    if (sim[i] != Dtype(0) && sim[i] != Dtype(1)) atomicMin(first_invalid, i);
  }
}

// The backward's non-finite flag (workspace): zeroed, then set by every pair whose dist_sq is not finite.
template <typename Dtype>
__global__ void nonfinite_pairs_kernel(int n, const Dtype* dist_sq, int* flag) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    if (!math::is_finite(dist_sq[i])) *flag = 1;  // every writer stores 1
  }
}

// Gradient element idx (pair idx / dim): NaN when some pair is not finite, else as contrastive_backward_cpu.
template <typename Dtype>
__global__ void backward_kernel(size_t count, int dim, const Dtype* sim, Dtype margin, bool legacy,
                                Dtype alpha, const Dtype* diff, const Dtype* dist_sq,
                                const int* picked, const int* nonfinite_flag, Dtype* grad_a, Dtype* grad_b) {
  const bool nonfinite = *nonfinite_flag != 0;
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < count;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    Dtype g = Dtype(NAN);
    if (!nonfinite) {
      const size_t i = idx / dim;
      const Dtype factor =
          contrastive_pair_factor(picked[i] != 0, dist_sq[i], sim[i] != Dtype(0), margin, legacy, alpha);
      g = contrastive_gradient(factor, diff[idx]);
    }
    if (grad_a) grad_a[idx] = g;
    if (grad_b) grad_b[idx] = -g;
  }
}

}  // namespace

template <typename Dtype>
void find_invalid_label_gpu(const CudaContext& context, const Dtype* sim, int n, int* first_invalid) {
  cudaStream_t stream = context.stream;
  set_int_kernel<<<1, 1, 0, stream>>>(first_invalid, n);
  if (n > 0) invalid_label_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(sim, n, first_invalid);
}

template <typename Dtype>
void contrastive_forward_gpu(const CudaContext& context, int n, int dim, const Dtype* a, const Dtype* b,
                             const Dtype* sim, const ContrastiveOptions& options, const ContrastivePairs<Dtype>& pairs,
                             void* workspace, Dtype* loss) {
  cudaStream_t stream = context.stream;
  const Dtype margin = static_cast<Dtype>(options.margin);
  const bool legacy = options.legacy_version;
  const int num_picked = num_picked_pairs(n, options.mining_ratio);
  const Dtype* cost = pairs.cost;
  int* picked = pairs.picked;
  SelectionWorkspace* ws = static_cast<SelectionWorkspace*>(workspace);
  cudaMemsetAsync(ws, 0, sizeof(SelectionWorkspace), stream);
  if (n > 0) {
    pair_cost_kernel<Dtype><<<blocks_for_warps(n), kThreads, 0, stream>>>(
        n, dim, a, b, sim, margin, legacy, pairs.diff, pairs.dist_sq, pairs.cost, picked, &ws->num_similar,
        &ws->nonfinite);
  }
  if (n > 0 && num_picked > 0) {
    const int key_bytes = static_cast<int>(sizeof(Dtype));
    const int index_bytes = radix::index_bytes_for(n);
    start_selection_kernel<<<1, 1, 0, stream>>>(n, num_picked, ws);
    for (int pass = 0; pass < key_bytes + index_bytes; ++pass) {
      digit_histogram_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(
          n, sim, cost, pass, key_bytes, index_bytes, ws);
      choose_digit_kernel<<<1, 32, 0, stream>>>(pass, key_bytes, index_bytes, ws);
    }
    mark_picked_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(n, sim, cost, index_bytes, ws,
                                                                       picked);
  }
  picked_loss_kernel<Dtype><<<1, kThreads, 0, stream>>>(n, num_picked, cost, picked, &ws->nonfinite, loss);
}

template <typename Dtype>
void contrastive_backward_gpu(const CudaContext& context, int n, int dim, const Dtype* sim,
                              const ContrastiveOptions& options, const ContrastivePairs<Dtype>& pairs,
                              Dtype loss_weight, void* workspace, Dtype* grad_a, Dtype* grad_b) {
  cudaStream_t stream = context.stream;
  const size_t count = static_cast<size_t>(n) * dim;
  if (count == 0 || (!grad_a && !grad_b)) return;
  const Dtype alpha = contrastive_gradient_scale(loss_weight, num_picked_pairs(n, options.mining_ratio));
  int* flag = &static_cast<SelectionWorkspace*>(workspace)->backward_nonfinite;
  cudaMemsetAsync(flag, 0, sizeof(int), stream);
  nonfinite_pairs_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(n, pairs.dist_sq, flag);
  backward_kernel<Dtype><<<blocks_for(count), kThreads, 0, stream>>>(
      count, dim, sim, static_cast<Dtype>(options.margin), options.legacy_version, alpha, pairs.diff, pairs.dist_sq,
      pairs.picked, flag, grad_a, grad_b);
}

#define CM_INSTANTIATE_CONTRASTIVE_GPU(Dtype)                                                              \
  template void find_invalid_label_gpu<Dtype>(const CudaContext&, const Dtype*, int, int*);                \
  template void contrastive_forward_gpu<Dtype>(const CudaContext&, int, int, const Dtype*, const Dtype*,   \
                                               const Dtype*, const ContrastiveOptions&,                    \
                                               const ContrastivePairs<Dtype>&, void*, Dtype*);             \
  template void contrastive_backward_gpu<Dtype>(const CudaContext&, int, int, const Dtype*,                \
                                                const ContrastiveOptions&, const ContrastivePairs<Dtype>&, \
                                                Dtype, void*, Dtype*, Dtype*);

CM_INSTANTIATE_CONTRASTIVE_GPU(float)
CM_INSTANTIATE_CONTRASTIVE_GPU(double)

#undef CM_INSTANTIATE_CONTRASTIVE_GPU

}  // namespace caffe_mining
