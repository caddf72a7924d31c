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

#include <algorithm>
#include <cstdint>

namespace caffe_mining {

namespace {

const int kThreads = 256;
const int kMaxBlocks = 4096;
const int kKinds = 2;  // kind 0 = dissimilar pairs, kind 1 = similar pairs
using radix::KindSelection;
using radix::kBins;

struct SelectionWorkspace {
  KindSelection kind[kKinds];
  int num_similar;
  int nonfinite;  // 1 when some dist_sq is not finite: the loss is NaN
  unsigned int histogram[kKinds * kBins];
};

// inf - inf and NaN - NaN are NaN.
template <typename Dtype>
__device__ __forceinline__ bool is_finite(Dtype x) {
  return x - x == Dtype(0);
}

inline int blocks_for(size_t count) {
  const size_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<size_t>(std::max<size_t>(blocks, 1), kMaxBlocks));
}

// One warp per pair: diff = a - b, dist_sq, cost; count the similar pairs, flag a non-finite dist_sq.
template <typename Dtype>
__global__ void pair_cost_kernel(int n, int dim, const Dtype* a, const Dtype* b, const Dtype* sim,
                                 Dtype margin, bool legacy, Dtype* diff, Dtype* dist_sq, Dtype* cost,
                                 int* picked, int* num_similar, int* nonfinite) {
  const int lane = threadIdx.x & 31;
  const int warps_per_block = blockDim.x / 32;
  for (int i = blockIdx.x * warps_per_block + threadIdx.x / 32; i < n;
       i += gridDim.x * warps_per_block) {
    const size_t row = static_cast<size_t>(i) * dim;
    Dtype partial(0);
    for (int j = lane; j < dim; j += 32) {
      const Dtype d = a[row + j] - b[row + j];
      diff[row + j] = d;
      partial += d * d;
    }
    // i is the same for the whole warp, so all 32 lanes take part in the shuffles.
    for (int offset = 16; offset > 0; offset /= 2) {
      partial += __shfl_down_sync(0xffffffffu, partial, offset);
    }
    if (lane == 0) {
      const bool similar = sim[i] != Dtype(0);
      dist_sq[i] = partial;
      cost[i] = contrastive_cost(partial, similar, margin, legacy);
      picked[i] = 0;
      if (similar) atomicAdd(num_similar, 1);
      if (!is_finite(partial)) *nonfinite = 1;  // every writer stores 1
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
  if (threadIdx.x == 0) {
    if (*nonfinite) {
      *loss = Dtype(NAN);
    } else {
      *loss = num_picked > 0 ? partial[0] / static_cast<Dtype>(num_picked) / Dtype(2) : Dtype(0);
    }
  }
}

__global__ void set_int_kernel(int* out, int value) { *out = value; }

template <typename Dtype>
__global__ void invalid_label_kernel(const Dtype* sim, int n, int* first_invalid) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    if (sim[i] != Dtype(0) && sim[i] != Dtype(1)) atomicMin(first_invalid, i);
  }
}

// The backward's non-finite flag lives, without workspace, in the first 4 bytes of the first gradient buffer that
// is written (`slot`): zeroed, set by nonfinite_pairs_kernel, read by backward_kernel (which leaves that one
// element alone), and element 0 is written last by backward_first_kernel.
template <typename Dtype>
__global__ void nonfinite_pairs_kernel(int n, const Dtype* dist_sq, int* slot) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    if (!is_finite(dist_sq[i])) *slot = 1;  // every writer stores 1
  }
}

// Gradient element idx (pair idx / dim): NaN when some pair is not finite, else as contrastive_backward_cpu.
template <typename Dtype>
__device__ __forceinline__ Dtype gradient_element(size_t idx, int dim, const Dtype* sim, Dtype margin,
                                                  bool legacy, Dtype alpha, const Dtype* diff,
                                                  const Dtype* dist_sq, const int* picked, bool nonfinite) {
  if (nonfinite) return Dtype(NAN);
  const size_t i = idx / dim;
  const Dtype factor = picked[i]
      ? contrastive_diff_factor(dist_sq[i], sim[i] != Dtype(0), margin, legacy, alpha)
      : Dtype(0);
  // Written as zero rather than 0 * diff so that unpicked rows stay 0 even if diff is not finite.
  return factor != Dtype(0) ? factor * diff[idx] : Dtype(0);
}

template <typename Dtype>
__global__ void backward_kernel(size_t count, int dim, const Dtype* sim, Dtype margin, bool legacy,
                                Dtype alpha, const Dtype* diff, const Dtype* dist_sq,
                                const int* picked, const int* slot, Dtype* grad_a, Dtype* grad_b) {
  const bool nonfinite = *slot != 0;
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < count;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const Dtype g = gradient_element(idx, dim, sim, margin, legacy, alpha, diff, dist_sq, picked, nonfinite);
    if (grad_a && idx != 0) grad_a[idx] = g;
    if (grad_b && (idx != 0 || grad_a)) grad_b[idx] = -g;  // the slot is grad_a's element 0, or grad_b's
  }
}

template <typename Dtype>
__global__ void backward_first_kernel(int dim, const Dtype* sim, Dtype margin, bool legacy, Dtype alpha,
                                      const Dtype* diff, const Dtype* dist_sq, const int* picked,
                                      Dtype* grad_a, Dtype* grad_b) {
  Dtype* slot_buffer = grad_a ? grad_a : grad_b;
  const bool nonfinite = *reinterpret_cast<const int*>(slot_buffer) != 0;
  const Dtype g = gradient_element(0, dim, sim, margin, legacy, alpha, diff, dist_sq, picked, nonfinite);
  if (grad_a) grad_a[0] = g;
  else grad_b[0] = -g;
}

}  // namespace

size_t contrastive_workspace_bytes_gpu(int /*n*/) {
  // The selection state does not grow with n: the radix select needs only per-kind histograms.
  return (sizeof(SelectionWorkspace) + 255) / 256 * 256;
}

template <typename Dtype>
void find_invalid_label_gpu(const Dtype* sim, int n, int* first_invalid, cm_stream_t stream) {
  set_int_kernel<<<1, 1, 0, stream>>>(first_invalid, n);
  if (n > 0) invalid_label_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(sim, n, first_invalid);
}

template <typename Dtype>
void contrastive_forward_gpu(int n, int dim, const Dtype* a, const Dtype* b, const Dtype* sim,
                             Dtype margin, bool legacy, int num_picked, Dtype* diff, Dtype* dist_sq,
                             Dtype* cost, int* picked, void* workspace, Dtype* loss,
                             cm_stream_t stream) {
  SelectionWorkspace* ws = static_cast<SelectionWorkspace*>(workspace);
  cudaMemsetAsync(ws, 0, sizeof(SelectionWorkspace), stream);
  if (n > 0) {
    const int warps_per_block = kThreads / 32;
    const int pair_blocks = static_cast<int>(
        std::min<int>((n + warps_per_block - 1) / warps_per_block, kMaxBlocks));
    pair_cost_kernel<Dtype><<<pair_blocks, kThreads, 0, stream>>>(
        n, dim, a, b, sim, margin, legacy, diff, dist_sq, cost, picked, &ws->num_similar, &ws->nonfinite);
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
void contrastive_backward_gpu(int n, int dim, const Dtype* sim, Dtype margin, bool legacy,
                              int num_picked, Dtype loss_grad, const Dtype* diff, const Dtype* dist_sq,
                              const int* picked, Dtype* grad_a, Dtype* grad_b, cm_stream_t stream) {
  const size_t count = static_cast<size_t>(n) * dim;
  if (count == 0 || (!grad_a && !grad_b)) return;
  const Dtype alpha = num_picked > 0 ? loss_grad / static_cast<Dtype>(num_picked) : Dtype(0);
  int* slot = reinterpret_cast<int*>(grad_a ? grad_a : grad_b);
  cudaMemsetAsync(slot, 0, sizeof(int), stream);
  nonfinite_pairs_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(n, dist_sq, slot);
  backward_kernel<Dtype><<<blocks_for(count), kThreads, 0, stream>>>(
      count, dim, sim, margin, legacy, alpha, diff, dist_sq, picked, slot, grad_a, grad_b);
  backward_first_kernel<Dtype><<<1, 1, 0, stream>>>(dim, sim, margin, legacy, alpha, diff, dist_sq, picked,
                                                    grad_a, grad_b);
}

#define CM_INSTANTIATE_CONTRASTIVE_GPU(Dtype)                                                        \
  template void find_invalid_label_gpu<Dtype>(const Dtype*, int, int*, cm_stream_t);                 \
  template void contrastive_forward_gpu<Dtype>(int, int, const Dtype*, const Dtype*, const Dtype*,   \
                                               Dtype, bool, int, Dtype*, Dtype*, Dtype*, int*,       \
                                               void*, Dtype*, cm_stream_t);                          \
  template void contrastive_backward_gpu<Dtype>(int, int, const Dtype*, Dtype, bool, int, Dtype,     \
                                                const Dtype*, const Dtype*, const int*, Dtype*,      \
                                                Dtype*, cm_stream_t);

CM_INSTANTIATE_CONTRASTIVE_GPU(float)
CM_INSTANTIATE_CONTRASTIVE_GPU(double)

#undef CM_INSTANTIATE_CONTRASTIVE_GPU

}  // namespace caffe_mining
