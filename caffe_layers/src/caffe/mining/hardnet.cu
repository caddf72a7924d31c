// CUDA implementation of the HardNet loss core (see caffe_mining/hardnet.hpp for the math and the contracts).
// Everything stays on the device, with no host synchronisation: squared norms (a warp per row), one cuBLAS GEMM for
// the dot products, then a warp per row for the mining:
//   - MIN without anchor swap mines on the squared scale from the dot products (distances/dot_distance.hpp, the CPU's rule
//     and decisions, one square root per row; the n x n distances are never written);
//   - every other reduction turns the dot products into D (the CPU's operations) and mines D with lane-interleaved
//     columns, D_ji (anchor swap) coming from a block-shared transposed tile so that column reads coalesce.
// The backward is deterministic: MIN/RANDOM sum each output row in the CPU's order (no atomics); AVERAGE builds its
// weights and row/column sums in fixed orders and runs two GEMMs. Per-element steps are in hardnet_gpu_steps.hpp,
// which the CPU tests run serially.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "caffe_mining/common/cublas_call.cuh"
#include "caffe_mining/common/launch.hpp"
#include "caffe_mining/common/math.hpp"
#include "caffe_mining/distances/dot_distance.hpp"
#include "caffe_mining/distances/squared_norm.hpp"
#include "caffe_mining/hardnet.hpp"
#include "caffe_mining/hardnet_gpu_steps.hpp"

namespace caffe_mining {

namespace {

using hardnet_gpu::kTileRows;

static_assert(kWarpsPerBlock == kTileRows, "mine_rows_kernel: one warp per row of the swap tile");

// The forward's non-finite flag: one int after the two squared-norm vectors of the scratch (which holds at least
// 2n + 1 elements for every reduction).
template <typename Dtype>
int* nonfinite_flag(Dtype* scratch, int n) {
  return reinterpret_cast<int*>(scratch + 2 * static_cast<std::size_t>(n));
}

// The backward's flag, as on the CPU: the forward set valid_rows = -1 for non-finite input.
template <typename Dtype>
__device__ __forceinline__ bool forward_was_nonfinite(const HardNetMining<Dtype>& mining) {
  return mining.valid_rows[0] < 0;
}

// A warp per row: |x_i|^2 in warp_squared_norm's order.
template <typename Dtype>
__global__ void squared_norms_kernel(int n, int dim, const Dtype* x, Dtype* sq_norm) {
  const int lane = threadIdx.x % kWarp;
  for (int i = (blockIdx.x * blockDim.x + threadIdx.x) / kWarp; i < n; i += gridDim.x * blockDim.x / kWarp) {
    const Dtype* row = x + static_cast<std::size_t>(i) * dim;
    const Dtype sum = warp_squared_norm<Dtype>(dim, [row](int k) { return row[k]; });
    if (lane == 0) sq_norm[i] = sum;
  }
}

// One block: the non-finite policy's flag from the squared norms.
template <typename Dtype>
__global__ void nonfinite_check_kernel(int n, const Dtype* sq_norm_a, const Dtype* sq_norm_p, int* flag) {
  __shared__ Dtype red_a[kThreads], red_p[kThreads];
  __shared__ int red_bad[kThreads];
  const int t = threadIdx.x;
  Dtype max_a = Dtype(0), max_p = Dtype(0);
  int bad = 0;
  for (int i = t; i < n; i += kThreads) {
    const Dtype a = sq_norm_a[i], p = sq_norm_p[i];
    if (math::is_finite(a)) max_a = a > max_a ? a : max_a; else bad = 1;
    if (math::is_finite(p)) max_p = p > max_p ? p : max_p; else bad = 1;
  }
  red_a[t] = max_a;
  red_p[t] = max_p;
  red_bad[t] = bad;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (t < stride) {
      red_a[t] = red_a[t + stride] > red_a[t] ? red_a[t + stride] : red_a[t];
      red_p[t] = red_p[t + stride] > red_p[t] ? red_p[t + stride] : red_p[t];
      red_bad[t] |= red_bad[t + stride];
    }
    __syncthreads();
  }
  if (t == 0) *flag = hardnet_gpu::inputs_nonfinite(red_bad[0] != 0, red_a[0], red_p[0]) ? 1 : 0;
}

// MIN without anchor swap, a warp per row i on the dot products a_i.p_j (`dots`, row-major): the count and the
// smallest squared distance x_min over the valid columns, then the lowest valid column whose x has x_min's root.
template <typename Dtype>
__global__ void squared_min_rows_kernel(int n, const Dtype* dots, const Dtype* sq_norm_a, const Dtype* sq_norm_p,
                                        const Dtype* labels, Dtype eps, Dtype x_threshold, const int* flag,
                                        HardNetOptions options, HardNetMining<Dtype> mining) {
  const int lane = threadIdx.x % kWarp;
  const bool nonfinite = *flag != 0;
  for (int i = (blockIdx.x * blockDim.x + threadIdx.x) / kWarp; i < n; i += gridDim.x * blockDim.x / kWarp) {
    if (nonfinite) {
      if (lane == 0) hardnet_gpu::write_nonfinite_row(mining, i);
      continue;
    }
    const Dtype* row = dots + static_cast<std::size_t>(i) * n;
    const Dtype sq_a = sq_norm_a[i];
    hardnet_gpu::SquaredMinimum<Dtype> share = hardnet_gpu::squared_minimum_start<Dtype>();
    for (int j = lane; j < n; j += kWarp) {
      const Dtype x = squared_distance_from_dot(sq_a, sq_norm_p[j], row[j], eps);
      hardnet_gpu::squared_minimum_add(&share, hardnet_gpu::squared_valid(labels, i, j, x, x_threshold), x);
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {  // butterfly: every lane gets the row's result
      hardnet_gpu::SquaredMinimum<Dtype> other;
      other.x_min = __shfl_xor_sync(kFullMask, share.x_min, offset);
      other.count = __shfl_xor_sync(kFullMask, share.count, offset);
      hardnet_gpu::squared_minimum_merge(&share, other);
    }
    int chosen = -1;
    if (share.count > 0) {
      const Dtype x_max = largest_with_same_root(share.x_min);
      for (int start = 0; start < n && chosen < 0; start += kWarp) {
        const int j = start + lane;
        bool hit = false;
        if (j < n) {
          const Dtype x = squared_distance_from_dot(sq_a, sq_norm_p[j], row[j], eps);
          hit = hardnet_gpu::squared_valid(labels, i, j, x, x_threshold) && x <= x_max;
        }
        const unsigned int hits = __ballot_sync(kFullMask, hit);
        if (hits != 0u) chosen = start + __ffs(hits) - 1;
      }
    }
    if (lane == 0) {
      const Dtype pos = math::sqrt(squared_distance_from_dot(sq_a, sq_norm_p[i], row[i], eps));
      HardNetCandidate<Dtype> cand = {Dtype(0), false, false};
      if (chosen >= 0) cand = {math::sqrt(share.x_min), true, false};
      hardnet_gpu::write_row(mining, i, pos, share.count, chosen, cand, Dtype(0), Dtype(0), options);
    }
  }
}

// dist holds a_i . p_j on entry, D_ij on exit (distance_from_dot, as the CPU computes it).
template <typename Dtype>
__global__ void distance_kernel(int n, const Dtype* sq_norm_a, const Dtype* sq_norm_p, Dtype eps, Dtype* dist) {
  const std::size_t count = static_cast<std::size_t>(n) * n;
  for (std::size_t index = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < count;
       index += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(index / n), j = static_cast<int>(index % n);
    dist[index] = distance_from_dot(sq_norm_a[i], sq_norm_p[j], dist[index], eps);
  }
}

// Every reduction but MIN without anchor swap: a block of kWarpsPerBlock consecutive rows, a warp per row, lane l on
// columns l, l + 32, ... (coalesced reads of row i). With anchor swap the block first loads the 32 x kWarpsPerBlock
// tile D[j0 .. j0+31][i0 .. i0+7] (coalesced by rows j) into shared memory, so each warp reads its D_ji there.
template <typename Dtype>
struct SwapTile {
  Dtype d_ji[kWarp][kWarpsPerBlock + 1];  // +1: lanes of a warp hit distinct banks
};

template <typename Dtype>
__device__ __forceinline__ void load_swap_tile(int n, const Dtype* dist, int i0, int j0, SwapTile<Dtype>* tile) {
  const hardnet_gpu::TileCell cell = hardnet_gpu::swap_tile_cell(threadIdx.x);
  const int j = j0 + cell.column, i = i0 + cell.row;
  tile->d_ji[cell.column][cell.row] = j < n && i < n ? dist[static_cast<std::size_t>(j) * n + i] : Dtype(0);
}

template <typename Dtype>
__device__ __forceinline__ HardNetCandidate<Dtype> tile_candidate(int n, const Dtype* dist, const Dtype* labels,
                                                                 int i, int j, Dtype threshold, bool swap,
                                                                 const SwapTile<Dtype>& tile) {
  const Dtype d_ij = dist[static_cast<std::size_t>(i) * n + j];
  const bool valid_ij = hardnet_negative_valid(labels, i, j, d_ij, threshold);
  if (!swap) return hardnet_candidate_of(d_ij, valid_ij, d_ij, false, false);
  const Dtype d_ji = tile.d_ji[threadIdx.x % kWarp][threadIdx.x / kWarp];
  return hardnet_candidate_of(d_ij, valid_ij, d_ji, hardnet_negative_valid(labels, j, i, d_ji, threshold), true);
}

template <typename Dtype>
__global__ void mine_rows_kernel(int n, const Dtype* labels, const Dtype* uniforms, const int* flag,
                                 HardNetOptions options, HardNetMining<Dtype> mining) {
  __shared__ SwapTile<Dtype> tile;
  const int lane = threadIdx.x % kWarp;
  const int i0 = blockIdx.x * kWarpsPerBlock;
  const int i = i0 + threadIdx.x / kWarp;
  const bool row_in_range = i < n;
  if (*flag != 0) {  // uniform over the grid
    if (row_in_range && lane == 0) hardnet_gpu::write_nonfinite_row(mining, i);
    return;
  }
  const Dtype margin = static_cast<Dtype>(options.margin);
  const Dtype threshold = static_cast<Dtype>(options.duplicate_threshold);
  const bool swap = options.anchor_swap;
  const bool average = options.batch_reduce == HardNetBatchReduce::kAverage;
  const Dtype* dist = mining.dist;
  const Dtype pos = row_in_range ? dist[static_cast<std::size_t>(i) * n + i] : Dtype(0);

  hardnet_gpu::RowShare<Dtype> share = hardnet_gpu::row_share_start<Dtype>();
  for (int j0 = 0; j0 < n; j0 += kWarp) {
    if (swap) {
      load_swap_tile(n, dist, i0, j0, &tile);
      __syncthreads();
    }
    const int j = j0 + lane;
    if (row_in_range && j < n) {
      hardnet_gpu::row_share_add(&share, tile_candidate(n, dist, labels, i, j, threshold, swap, tile), j, pos,
                                 options.loss_type, margin, average);
    }
    if (swap) __syncthreads();
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {  // lane l merges lane l + offset
    hardnet_gpu::RowShare<Dtype> other;
    other.count = __shfl_down_sync(kFullMask, share.count, offset);
    other.hardest = __shfl_down_sync(kFullMask, share.hardest, offset);
    other.hardest_value = __shfl_down_sync(kFullMask, share.hardest_value, offset);
    other.loss_sum = __shfl_down_sync(kFullMask, share.loss_sum, offset);
    other.dpos_sum = __shfl_down_sync(kFullMask, share.dpos_sum, offset);
    if (lane < offset) hardnet_gpu::row_share_merge(&share, other);
  }
  const int count = __shfl_sync(kFullMask, share.count, 0);
  int chosen = __shfl_sync(kFullMask, share.hardest, 0);

  // RANDOM: the rank-th valid candidate in increasing j, 32 columns at a time. Every warp of the block takes part
  // in the tile loads.
  if (options.batch_reduce == HardNetBatchReduce::kRandom) {
    const bool block_has_rows = i0 < n;
    int rank = row_in_range && count > 0 ? hardnet_random_rank(uniforms[i], count) : 0;
    chosen = -1;
    bool done = !row_in_range || count == 0;
    for (int j0 = 0; j0 < n && block_has_rows; j0 += kWarp) {
      if (swap) {
        load_swap_tile(n, dist, i0, j0, &tile);
        __syncthreads();
      }
      const int j = j0 + lane;
      const bool valid =
          !done && j < n && tile_candidate(n, dist, labels, i, j, threshold, swap, tile).valid;
      const unsigned int valid_mask = __ballot_sync(kFullMask, valid);
      if (!done) {
        const int hit_lane = hardnet_gpu::rank_in_chunk(valid_mask, &rank);
        if (hit_lane >= 0) {
          chosen = j0 + hit_lane;
          done = true;
        }
      }
      if (swap) __syncthreads();
    }
  }
  if (!row_in_range || lane != 0) return;
  HardNetCandidate<Dtype> cand = {Dtype(0), false, false};
  if (chosen >= 0) cand = hardnet_candidate(dist, labels, n, i, chosen, threshold, swap);
  hardnet_gpu::write_row(mining, i, pos, count, chosen, cand, share.loss_sum, share.dpos_sum, options);
}

// One block: loss = mean of the row losses over the non-empty rows (fixed tree order); NaN for non-finite inputs.
template <typename Dtype>
__global__ void mean_loss_kernel(int n, const Dtype* row_loss, const int* neg_count, const int* flag, int* valid_rows,
                                 Dtype* loss) {
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
    valid_rows[0] = *flag != 0 ? -1 : red_rows[0];  // -1: non-finite input, as on the CPU
    if (*flag != 0) {
      loss[0] = Dtype(NAN);
    } else {
      loss[0] = red_rows[0] > 0 ? red_loss[0] / Dtype(red_rows[0]) : Dtype(0);
    }
  }
}

// MIN / RANDOM backward, step 1: each row's scatter key, and per output row the number of rows whose negative
// lands on it (int atomics: the counts are exact whatever the order).
template <typename Dtype>
__global__ void scatter_keys_kernel(int n, HardNetMining<Dtype> mining, Dtype loss_weight, int* key, int* incoming) {
  const Dtype scale = hardnet_gpu::gradient_scale(loss_weight, mining.valid_rows[0]);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int k = hardnet_gpu::scatter_key(mining, n, i, scale);
    key[i] = k;
    if (k >= 0) atomicAdd(incoming + (k >= n ? k - n : k), 1);
  }
}

// Adds `term` (one of the steps' add functions) on the warp's elements of output row r.
template <typename Dtype, typename Term>
__device__ __forceinline__ void add_on_row(int dim, int r, Dtype* anchor_diff, Dtype* positive_diff,
                                           const Term& term) {
  for (int k = threadIdx.x % kWarp; k < dim; k += kWarp) {
    const std::size_t index = static_cast<std::size_t>(r) * dim + k;
    Dtype acc_a = anchor_diff != nullptr ? anchor_diff[index] : Dtype(0);
    Dtype acc_p = positive_diff != nullptr ? positive_diff[index] : Dtype(0);
    term(k, &acc_a, &acc_p);
    if (anchor_diff != nullptr) anchor_diff[index] = acc_a;
    if (positive_diff != nullptr) positive_diff[index] = acc_p;
  }
}

// Step 2: a warp per output row r writes rows r of both diffs: 0, then the terms in the CPU's order (rows i
// increasing, row r's own terms at i = r), each lane always on the same elements, so no atomics and no race.
template <typename Dtype>
__global__ void gather_backward_kernel(int n, int dim, const Dtype* anchor, const Dtype* positive,
                                       HardNetMining<Dtype> mining, Dtype loss_weight, const int* key,
                                       const int* incoming, Dtype* anchor_diff, Dtype* positive_diff) {
  const int lane = threadIdx.x % kWarp;
  const bool nonfinite = forward_was_nonfinite(mining);
  const Dtype scale = hardnet_gpu::gradient_scale(loss_weight, mining.valid_rows[0]);
  for (int r = (blockIdx.x * blockDim.x + threadIdx.x) / kWarp; r < n; r += gridDim.x * blockDim.x / kWarp) {
    const Dtype start = nonfinite ? Dtype(NAN) : Dtype(0);
    for (int k = lane; k < dim; k += kWarp) {
      const std::size_t index = static_cast<std::size_t>(r) * dim + k;
      if (anchor_diff != nullptr) anchor_diff[index] = start;
      if (positive_diff != nullptr) positive_diff[index] = start;
    }
    if (nonfinite) continue;
    const auto own = [&](int k, Dtype* acc_a, Dtype* acc_p) {
      hardnet_gpu::add_own_terms(mining, dim, anchor, positive, r, k, scale, acc_a, acc_p);
    };
    bool own_done = false;
    int remaining = incoming[r];
    for (int start_i = 0; start_i < n && remaining > 0; start_i += kWarp) {
      const int i = start_i + lane;
      const int k_i = i < n ? key[i] : -1;
      unsigned int hits = __ballot_sync(kFullMask, k_i == r || k_i == n + r);
      while (hits != 0u) {  // increasing i
        const int hit_lane = __ffs(hits) - 1;
        hits &= hits - 1u;
        const int source = start_i + hit_lane;
        const int source_key = __shfl_sync(kFullMask, k_i, hit_lane);
        if (!own_done && source > r) {
          add_on_row(dim, r, anchor_diff, positive_diff, own);
          own_done = true;
        }
        add_on_row(dim, r, anchor_diff, positive_diff, [&](int k, Dtype* acc_a, Dtype* acc_p) {
          hardnet_gpu::add_incoming_term(mining, n, dim, anchor, positive, source, source_key, k, scale, acc_a,
                                         acc_p);
        });
        --remaining;
      }
    }
    if (!own_done) add_on_row(dim, r, anchor_diff, positive_diff, own);
  }
}

// AVERAGE backward, one thread per (i, j): V_ij = (d loss / d D_ij) / D_ij, scale included.
template <typename Dtype>
__global__ void average_weight_kernel(int n, const Dtype* labels, HardNetOptions options,
                                      HardNetMining<Dtype> mining, Dtype loss_weight, Dtype* weight) {
  const std::size_t count = static_cast<std::size_t>(n) * n;
  const Dtype scale = hardnet_gpu::gradient_scale(loss_weight, mining.valid_rows[0]);
  for (std::size_t index = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < count;
       index += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(index / n), j = static_cast<int>(index % n);
    Dtype w;
    if (i == j) {
      w = mining.neg_count[i] > 0 ? mining.dloss_dpos[i] : Dtype(0);
    } else {
      w = hardnet_average_weight(mining.dist, labels, mining.pos_dist, mining.neg_count, n, i, j,
                                 options.loss_type, static_cast<Dtype>(options.margin),
                                 static_cast<Dtype>(options.duplicate_threshold), options.anchor_swap);
    }
    weight[index] = math::safe_div(scale * w, mining.dist[index]);
  }
}

// row_sum_i = sum_j V_ij: a warp per row, lane-interleaved, the warp's tree.
template <typename Dtype>
__global__ void row_sums_kernel(int n, const Dtype* weight, Dtype* row_sum) {
  const int lane = threadIdx.x % kWarp;
  for (int i = (blockIdx.x * blockDim.x + threadIdx.x) / kWarp; i < n; i += gridDim.x * blockDim.x / kWarp) {
    const Dtype* row = weight + static_cast<std::size_t>(i) * n;
    Dtype sum = Dtype(0);
    for (int j = lane; j < n; j += kWarp) sum += row[j];
    sum = warp_sum(sum);
    if (lane == 0) row_sum[i] = sum;
  }
}

// col_sum_j = sum_i V_ij: a block per 32 columns, lane = column (coalesced), warps over rows, then warps summed in
// order.
template <typename Dtype>
__global__ void col_sums_kernel(int n, const Dtype* weight, Dtype* col_sum) {
  __shared__ Dtype partial[kWarpsPerBlock][kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int j0 = blockIdx.x * kWarp; j0 < n; j0 += gridDim.x * kWarp) {
    const int j = j0 + lane;
    Dtype sum = Dtype(0);
    if (j < n) {
      for (int i = warp; i < n; i += kWarpsPerBlock) sum += weight[static_cast<std::size_t>(i) * n + j];
    }
    partial[warp][lane] = sum;
    __syncthreads();
    if (warp == 0 && j < n) {
      Dtype total = partial[0][lane];
      for (int w = 1; w < kWarpsPerBlock; ++w) total += partial[w][lane];
      col_sum[j] = total;
    }
    __syncthreads();
  }
}

// out_ik = diag_i * x_ik.
template <typename Dtype>
__global__ void scale_rows_kernel(int n, int dim, const Dtype* diag, const Dtype* x, Dtype* out) {
  const std::size_t count = static_cast<std::size_t>(n) * dim;
  for (std::size_t index = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < count;
       index += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    out[index] = diag[index / dim] * x[index];
  }
}

// AVERAGE, after the GEMMs (which the host queued before the device knew): NaN everywhere for non-finite inputs,
// +0 everywhere when no row is valid (the CPU's memset), else nothing.
template <typename Dtype>
__global__ void average_edges_kernel(std::size_t count, HardNetMining<Dtype> mining, Dtype* anchor_diff,
                                     Dtype* positive_diff) {
  const bool nonfinite = forward_was_nonfinite(mining);
  if (!nonfinite && mining.valid_rows[0] > 0) return;
  const Dtype value = nonfinite ? Dtype(NAN) : Dtype(0);
  for (std::size_t index = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < count;
       index += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    if (anchor_diff != nullptr) anchor_diff[index] = value;
    if (positive_diff != nullptr) positive_diff[index] = value;
  }
}

}  // namespace

template <typename Dtype>
void hardnet_forward_gpu(const CudaContext& context, int n, int dim, const Dtype* anchor, const Dtype* positive,
                         const Dtype* labels, const Dtype* uniforms, const HardNetOptions& options,
                         const HardNetMining<Dtype>& mining, void* workspace, Dtype* loss) {
  Dtype* scratch = static_cast<Dtype*>(workspace);
  CublasCallScope scope(context);
  cudaStream_t stream = context.stream;
  cublasHandle_t cublas = context.cublas;
  Dtype* sq_norm_a = scratch;
  Dtype* sq_norm_p = scratch + n;
  int* flag = nonfinite_flag(scratch, n);
  const Dtype eps = static_cast<Dtype>(options.eps);
  squared_norms_kernel<Dtype><<<blocks_for_warps(n), kThreads, 0, stream>>>(n, dim, anchor, sq_norm_a);
  squared_norms_kernel<Dtype><<<blocks_for_warps(n), kThreads, 0, stream>>>(n, dim, positive, sq_norm_p);
  nonfinite_check_kernel<Dtype><<<1, kThreads, 0, stream>>>(n, sq_norm_a, sq_norm_p, flag);
  // Row-major A P^T is column-major (A P^T)^T = P A^T: op(P buffer) = T, op(A buffer) = N.
  check_cublas(gemm(cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, dim, Dtype(1), positive, dim, anchor, dim, Dtype(0),
                    mining.dist, n),
               "A * P^T");
  if (options.batch_reduce == HardNetBatchReduce::kMin && !options.anchor_swap) {
    const Dtype x_threshold = squared_threshold(static_cast<Dtype>(options.duplicate_threshold));
    squared_min_rows_kernel<Dtype><<<blocks_for_warps(n), kThreads, 0, stream>>>(
        n, mining.dist, sq_norm_a, sq_norm_p, labels, eps, x_threshold, flag, options, mining);
  } else {
    distance_kernel<Dtype><<<blocks_for(static_cast<std::size_t>(n) * n), kThreads, 0, stream>>>(
        n, sq_norm_a, sq_norm_p, eps, mining.dist);
    mine_rows_kernel<Dtype><<<(n + kWarpsPerBlock - 1) / kWarpsPerBlock, kThreads, 0, stream>>>(
        n, labels, uniforms, flag, options, mining);
  }
  mean_loss_kernel<Dtype><<<1, kThreads, 0, stream>>>(n, mining.row_loss, mining.neg_count, flag,
                                                      mining.valid_rows, loss);
}

template <typename Dtype>
void hardnet_backward_gpu(const CudaContext& context, int n, int dim, const Dtype* anchor, const Dtype* positive,
                          const Dtype* labels, const HardNetOptions& options, const HardNetMining<Dtype>& mining,
                          Dtype loss_weight, void* workspace, Dtype* anchor_diff, Dtype* positive_diff) {
  Dtype* scratch = static_cast<Dtype*>(workspace);
  cudaStream_t stream = context.stream;
  cublasHandle_t cublas = context.cublas;
  const std::size_t elements = static_cast<std::size_t>(n) * dim;
  if (anchor_diff == nullptr && positive_diff == nullptr) return;
  if (options.batch_reduce != HardNetBatchReduce::kAverage) {
    // The scratch's first 2n elements (the forward's norms) hold the keys and the incoming counts.
    int* key = reinterpret_cast<int*>(scratch);
    int* incoming = key + n;
    cudaMemsetAsync(incoming, 0, static_cast<std::size_t>(n) * sizeof(int), stream);
    scatter_keys_kernel<Dtype><<<blocks_for(n), kThreads, 0, stream>>>(n, mining, loss_weight, key, incoming);
    gather_backward_kernel<Dtype><<<blocks_for_warps(n), kThreads, 0, stream>>>(
        n, dim, anchor, positive, mining, loss_weight, key, incoming, anchor_diff, positive_diff);
    return;
  }
  // AVERAGE: dA = diag(V 1) A - V P, dP = diag(V^T 1) P - V^T A.
  CublasCallScope scope(context);
  const std::size_t nn = static_cast<std::size_t>(n) * n;
  Dtype* weight = scratch;
  Dtype* row_sum = scratch + nn;
  Dtype* col_sum = row_sum + n;
  average_weight_kernel<Dtype><<<blocks_for(nn), kThreads, 0, stream>>>(n, labels, options, mining, loss_weight,
                                                                        weight);
  if (anchor_diff != nullptr) {
    row_sums_kernel<Dtype><<<blocks_for_warps(n), kThreads, 0, stream>>>(n, weight, row_sum);
    scale_rows_kernel<Dtype><<<blocks_for(elements), kThreads, 0, stream>>>(n, dim, row_sum, anchor, anchor_diff);
    // Row-major dA -= V P is column-major dA^T -= P^T V^T: both buffers as they are (op N).
    check_cublas(gemm(cublas, CUBLAS_OP_N, CUBLAS_OP_N, dim, n, n, Dtype(-1), positive, dim, weight, n, Dtype(1),
                      anchor_diff, dim),
                 "V * P");
  }
  if (positive_diff != nullptr) {
    col_sums_kernel<Dtype><<<(n + kWarp - 1) / kWarp, kThreads, 0, stream>>>(n, weight, col_sum);
    scale_rows_kernel<Dtype><<<blocks_for(elements), kThreads, 0, stream>>>(n, dim, col_sum, positive,
                                                                            positive_diff);
    // Row-major dP -= V^T A is column-major dP^T -= A^T V: op(V buffer) = T.
    check_cublas(gemm(cublas, CUBLAS_OP_N, CUBLAS_OP_T, dim, n, n, Dtype(-1), anchor, dim, weight, n, Dtype(1),
                      positive_diff, dim),
                 "V^T * A");
  }
  average_edges_kernel<Dtype><<<blocks_for(elements), kThreads, 0, stream>>>(elements, mining, anchor_diff,
                                                                             positive_diff);
}

template void hardnet_forward_gpu<float>(const CudaContext&, int, int, const float*, const float*, const float*,
                                         const float*, const HardNetOptions&, const HardNetMining<float>&, void*,
                                         float*);
template void hardnet_forward_gpu<double>(const CudaContext&, int, int, const double*, const double*, const double*,
                                          const double*, const HardNetOptions&, const HardNetMining<double>&, void*,
                                          double*);
template void hardnet_backward_gpu<float>(const CudaContext&, int, int, const float*, const float*, const float*,
                                          const HardNetOptions&, const HardNetMining<float>&, float, void*, float*,
                                          float*);
template void hardnet_backward_gpu<double>(const CudaContext&, int, int, const double*, const double*,
                                           const double*, const HardNetOptions&, const HardNetMining<double>&, double,
                                           void*, double*, double*);

}  // namespace caffe_mining
