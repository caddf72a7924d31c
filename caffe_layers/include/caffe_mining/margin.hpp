// Margin loss with distance-weighted sampling and a learnable beta ("Sampling Matters in Deep Embedding Learning",
// Wu, Manmatha, Smola, Krähenbühl 2017). Caffe-free core: plain pointers and sizes, caller-owned buffers; the
// steps below are host/device functions that the CPU (.cpp) and CUDA (.cu) paths run in the same order.
//
// Inputs: n embeddings x_i (dim values each, meant to be L2-normalised: the sampler's density is the unit
// sphere's; the core does not normalise), n integer class ids y_i, and beta ([max(1, num_classes)] values).
//
// Sampling. d_ij = sqrt(|x_i - x_j|^2 + eps), |x_i - x_j|^2 summed from the differences in one fixed order
// (distances/difference_distance.hpp). For every anchor i and every positive p of i (y_p = y_i, p != i, in
// increasing p), negatives_per_positive draws r = 0, 1, ... of a negative from i's row of weights
// (miners/distance_weighted.hpp: DISTANCE_WEIGHTED 1/q(max(d, cutoff)), 0 at d >= nonzero_loss_cutoff; UNIFORM 1),
// with replacement: u = Philox4x32-10(key = (seed mod 2^32, seed / 2^32), counter = (i, p, r, iteration mod 2^32)),
// 53 bits in [0, 1) (common/philox.hpp); the negative is the first j with W_i,j > u W_i,n-1 (W the row's cumulative
// weights, in double). The draw depends on nothing but those numbers, so the CPU and the GPU draw the same
// triplets for the same seed and iteration. An anchor with no positive, or whose row has no non-zero weight,
// contributes no triplet. Triplets t = (a, p, n) are stored in order of (a, p, r).
//
// Loss. With c(a) = y_a when num_classes > 0 (labels must then lie in [0, num_classes)), else 0, alpha = margin:
//   E = [ sum_t (d_ap - beta_c(a) + alpha)+ + (beta_c(a) - d_an + alpha)+ + nu beta_c(a) ] / C,
//   C = the number of non-zero hinge terms over all triplets; E = 0 (and every gradient 0) when C = 0.
// Gradients (exact given the triplets; the draw is not differentiated, C is a constant):
//   dE/dd_ap = [d_ap - beta + alpha > 0] / C,  dE/dd_an = -[beta - d_an + alpha > 0] / C,
//   dE/dbeta_c = sum_{t: c(a_t) = c} (-[pos > 0] + [neg > 0] + nu) / C,
//   dd_ij/dx_i = (x_i - x_j) / d_ij.
// Non-finite input: a NaN/inf feature, a non-finite beta, or a distance that overflows gives E = NaN, no triplet
// (count -1 internally) and NaN in every gradient element (embedding and beta).
//
// Divergences from the paper and from its MXNet code (example/gluon/embedding_learning):
//   - the sampler's weights keep a per-row maximum (log-sum-exp): the code's global maximum underflows every
//     weight of a row to 0 at D = 128 (e^-91 and below), after which that anchor was sampled uniformly;
//   - log(1 - d^2/4) is floored (kSphereGapFloor) instead of reaching -inf / NaN when rounding gives d >= 2;
//   - an anchor with no positive or no drawable negative contributes no triplet (the code then drew uniformly from
//     the whole batch, the anchor itself and its positives included);
//   - C = 0 gives E = 0 and zero gradients (the code divides by zero);
//   - the draw is seeded per (seed, iteration, anchor, positive, draw) with a counter-based generator, not numpy's
//     global state; the sampler's distances are the loss's (sqrt(|x_i - x_j|^2 + eps)), not a separate
//     |x_i|^2 + |x_j|^2 - 2 x_i.x_j, so rounding never makes them negative;
//   - the code's beta step is its learning rate / batch size (its optimizer rescales the gradient); in Caffe's
//     SGD the blob's lr_mult is the whole step factor (see margin_loss_layer.hpp for a working value).
#ifndef CAFFE_MINING_MARGIN_HPP_
#define CAFFE_MINING_MARGIN_HPP_

#include <math.h>
#include <stdint.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <string>
#include <vector>

#include "caffe_mining/common/cuda_context.hpp"
#include "caffe_mining/common/math.hpp"
#include "caffe_mining/common/philox.hpp"
#include "caffe_mining/common/workspace.hpp"
#include "caffe_mining/distances/difference_distance.hpp"
#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/losses/margin_triplet.hpp"
#include "caffe_mining/miners/distance_weighted.hpp"
#include "caffe_mining/common/option_checks.hpp"

namespace caffe_mining {

/// Options of the loss (margin_loss_param); defaults are the paper's and its code's.
struct MarginOptions {
  double margin = 0.2;                 ///< alpha, >= 0
  double beta_init = 1.2;              ///< the layer's initial beta (the core reads beta from the caller)
  double nu = 0.0;                     ///< weight of the nu * beta term per triplet, >= 0
  int num_classes = 0;                 ///< 0: one beta; C > 0: one per class, labels in [0, C)
  int negatives_per_positive = 1;      ///< draws per (anchor, positive), >= 1
  NegativeSampler sampler = NegativeSampler::kDistanceWeighted;
  double cutoff = 0.5;                 ///< d̂ = max(d, cutoff) in the weights, > 0
  double nonzero_loss_cutoff = 1.4;    ///< weight 0 at d >= this; <= 0 disables (DISTANCE_WEIGHTED only)
  double eps = 1e-8;                   ///< inside the square root of every distance, > 0
  uint64_t seed = 0;                   ///< the generator's key

  /// Why these options cannot be used in Dtype, or "" when they can.
  template <typename Dtype>
  std::string validate() const;
};

template <typename Dtype>
std::string MarginOptions::validate() const {
  std::string problem = option_range_problem<Dtype>("margin", margin, 0.0, false);
  if (problem.empty()) problem = option_finite_problem<Dtype>("beta_init", beta_init);
  if (problem.empty()) problem = option_range_problem<Dtype>("nu", nu, 0.0, false);
  if (problem.empty() && num_classes < 0) {
    problem = "num_classes must be >= 0. Got: " + std::to_string(num_classes);
  }
  if (problem.empty() && negatives_per_positive < 1) {
    problem = "negatives_per_positive must be >= 1. Got: " + std::to_string(negatives_per_positive);
  }
  const int kind = static_cast<int>(sampler);
  if (problem.empty() && (kind < 0 || kind > 1)) problem = "sampler must be DISTANCE_WEIGHTED or UNIFORM";
  // The sampler works in double: cutoff and nonzero_loss_cutoff are checked as doubles.
  if (problem.empty()) problem = option_range_problem<double>("cutoff", cutoff, 0.0, true);
  if (problem.empty()) problem = option_finite_problem<double>("nonzero_loss_cutoff", nonzero_loss_cutoff);
  if (problem.empty()) problem = option_range_problem<Dtype>("eps", eps, 0.0, true);
  return problem;
}

/// Index of the first label that is not an integer (NaN and inf included) or, with num_classes > 0, not in
/// [0, num_classes); -1 when all are fine.
template <typename Dtype>
int margin_find_invalid_label(const Dtype* labels, int n, int num_classes) {
  for (int i = 0; i < n; ++i) {
    const double y = static_cast<double>(labels[i]);
    if (!(y == ::floor(y)) || ::fabs(y) > 2147483647.0) return i;
    if (num_classes > 0 && (y < 0 || y >= num_classes)) return i;
  }
  return -1;
}

/// The most triplets a batch with these (host) labels can give: negatives_per_positive * sum_i (|class of i| - 1).
/// -1 when that exceeds INT_MAX (the batch is refused).
/// The ordered pairs (i, j != i) of equal labels are counted per run of equal labels once sorted, c (c - 1) per run of
/// c; a NaN label (equal to none) is counted directly.
template <typename Dtype>
long long margin_triplet_capacity(const Dtype* labels, int n, const MarginOptions& options) {
  std::vector<double> sorted;
  sorted.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    if (labels[i] == labels[i]) sorted.push_back(static_cast<double>(labels[i]));
  }
  std::sort(sorted.begin(), sorted.end());
  long long pairs = 0;
  for (std::size_t begin = 0, end = 0; begin < sorted.size(); begin = end) {
    while (end < sorted.size() && sorted[end] == sorted[begin]) ++end;
    const long long run = static_cast<long long>(end - begin);
    pairs += run * (run - 1);
  }
  const long long capacity = pairs * options.negatives_per_positive;
  return capacity > INT_MAX / 3 ? -1 : capacity;
}

/// The sampled triplets and what the backward pass reads. Caller-owned, host pointers for the CPU functions and
/// device pointers for the GPU functions. capacity = margin_triplet_capacity(labels, n, options).
template <typename Dtype>
struct MarginMining {
  int* triplets;       ///< [capacity * 3] (anchor, positive, negative) of triplet t at 3t; the first T are set
  Dtype* pos_dist;     ///< [capacity] d_ap of each triplet
  Dtype* neg_dist;     ///< [capacity] d_an of each triplet
  int* anchor_count;   ///< [n] triplets of each anchor (0: none)
  int* anchor_offset;  ///< [n] index of each anchor's first triplet
  int* counts;         ///< [2] T (the number of triplets; -1: non-finite input) and C (non-zero hinge terms)
};

/// Byte offset of workspace piece `piece` on the GPU (0: distances, 1: cumulative weights, 2: totals, 3: flag).
template <typename Dtype>
std::size_t margin_workspace_offset(int n, int piece) {
  const std::size_t rows = static_cast<std::size_t>(n);
  const std::size_t sizes[3] = {rows * rows * sizeof(Dtype), rows * rows * sizeof(double), rows * sizeof(double)};
  std::size_t offset = 0;
  for (int k = 0; k < piece; ++k) offset += aligned_bytes(sizes[k]);
  return offset;
}

/// Byte offset of workspace piece `piece` on the CPU (0: distances, reused by the backward for its pair hinge counts;
/// 1: one row's cumulative weights, n doubles; 2: that row's eligible columns, 3: the indices in label order, 4: each
/// anchor's first index in that order, n ints each; 5: the end). Pieces 1-4 are packed (20 n bytes), so that the
/// CPU's bytes never exceed the GPU's (aligned(n^2 Dtype) + 8 n^2 + 8 n + 4 at least): a layer may size one
/// workspace for both.
template <typename Dtype>
std::size_t margin_cpu_workspace_offset(int n, int piece) {
  const std::size_t rows = static_cast<std::size_t>(n);
  const std::size_t sizes[4] = {rows * sizeof(double), rows * sizeof(int), rows * sizeof(int), rows * sizeof(int)};
  std::size_t offset = aligned_bytes(rows * rows * sizeof(Dtype));
  for (int k = 1; k < piece; ++k) offset += sizes[k - 1];
  return piece == 0 ? 0 : offset;
}

/// Bytes of workspace of margin_forward_* / margin_backward_* on `device`: the n x n distances (reused as the
/// backward's pair coefficients, or on the CPU its pair hinge counts), cumulative weights (every row on the GPU, one
/// on the CPU), on the GPU the rows' totals and the non-finite flag, on the CPU the pieces of
/// margin_cpu_workspace_offset; the GPU's pieces at multiples of 256 bytes. The CPU's bytes are at most the GPU's.
template <typename Dtype>
std::size_t margin_workspace_bytes(int n, const MarginOptions& /*options*/, Device device) {
  if (device == Device::kCpu) return margin_cpu_workspace_offset<Dtype>(n, 5);
  return margin_workspace_offset<Dtype>(n, 3) + sizeof(int);
}

// ---------------------------------------------------------------------------------------------------------------
// Steps shared by both paths (the GPU runs each in a thread; the CPU in a loop, in the same order).

/// The beta index of a label.
template <typename Dtype>
CM_HOST_DEVICE int margin_class_of(Dtype label, int num_classes) {
  return num_classes > 0 ? static_cast<int>(label) : 0;
}

/// d_ij of the distance matrix (d_ii = sqrt(eps)).
template <typename Dtype>
CM_HOST_DEVICE Dtype margin_distance(int dim, const Dtype* x, int i, int j, Dtype eps) {
  const Dtype sq = difference_squared_distance(dim, x + static_cast<std::size_t>(i) * dim,
                                              x + static_cast<std::size_t>(j) * dim);
  return math::sqrt(math::add_rn(sq, eps));
}

/// The uniform of draw r for (anchor, positive) at `iteration`.
CM_HOST_DEVICE double margin_uniform(uint64_t seed, uint64_t iteration, int anchor, int positive, int draw) {
  Philox4x32 counter;
  counter.word[0] = static_cast<uint32_t>(anchor);
  counter.word[1] = static_cast<uint32_t>(positive);
  counter.word[2] = static_cast<uint32_t>(draw);
  counter.word[3] = static_cast<uint32_t>(iteration);
  return philox_uniform53(philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)));
}

/// The number of positives of an anchor (same label, another index).
template <typename Dtype>
CM_HOST_DEVICE int margin_positive_count(int n, int anchor, const Dtype* labels) {
  int positives = 0;
  for (int j = 0; j < n; ++j) positives += (j != anchor && labels[j] == labels[anchor]) ? 1 : 0;
  return positives;
}

/// An anchor's number of triplets from its positives and its row's total weight.
CM_HOST_DEVICE int margin_anchor_triplets(int positives, double total, int negatives_per_positive) {
  return (positives > 0 && total > 0.0) ? positives * negatives_per_positive : 0;
}

/// Anchor i's row: its cumulative weights (cumulative, n doubles) and its number of triplets (0 when it has no
/// positive or no drawable negative). Returns the row's total weight.
template <typename Dtype>
CM_HOST_DEVICE double margin_anchor_row(int n, int dim, int anchor, const Dtype* dist, const Dtype* labels,
                                        NegativeSampler sampler, double cutoff, double nonzero_loss_cutoff,
                                        int negatives_per_positive, double* cumulative, int* count) {
  const int positives = margin_positive_count(n, anchor, labels);
  const double total = sampler_row_cumulative(sampler, n, dim, anchor, dist + static_cast<std::size_t>(anchor) * n,
                                              labels, cutoff, nonzero_loss_cutoff, cumulative);
  *count = margin_anchor_triplets(positives, total, negatives_per_positive);
  return total;
}

/// Anchor i's triplets, written from its offset: for each positive p (increasing) and draw r, the drawn negative,
/// picked from the row's cumulative weights: `sums` entries, entry e being column columns[e] (or e when `columns`
/// is null: the whole row). The positives are looked for among `candidates` (increasing indices that hold every
/// positive) or, when it is null, among 0 .. n - 1.
template <typename Dtype>
CM_HOST_DEVICE void margin_anchor_draws(int n, int anchor, const Dtype* dist, const Dtype* labels, const double* sums,
                                        int sum_count, const int* columns, double total, const int* candidates,
                                        int candidate_count, int negatives_per_positive, uint64_t seed,
                                        uint64_t iteration, int offset, int* triplets, Dtype* pos_dist,
                                        Dtype* neg_dist) {
  int t = offset;
  const Dtype* row = dist + static_cast<std::size_t>(anchor) * n;
  const int count = candidates != nullptr ? candidate_count : n;
  for (int c = 0; c < count; ++c) {
    const int p = candidates != nullptr ? candidates[c] : c;
    if (p == anchor || labels[p] != labels[anchor]) continue;
    for (int r = 0; r < negatives_per_positive; ++r, ++t) {
      const int pick = sampler_pick(sum_count, sums, total, margin_uniform(seed, iteration, anchor, p, r));
      const int negative = columns != nullptr ? columns[pick] : pick;
      triplets[3 * static_cast<std::size_t>(t)] = anchor;
      triplets[3 * static_cast<std::size_t>(t) + 1] = p;
      triplets[3 * static_cast<std::size_t>(t) + 2] = negative;
      pos_dist[t] = row[p];
      neg_dist[t] = row[negative];
    }
  }
}

/// The backward's hinge count of the pair (r, j), r != j: over every triplet that uses the pair (anchor r's, then
/// anchor j's, t increasing), +1 per non-zero positive hinge and -1 per non-zero negative hinge. Then
/// dE/dx_r = sum_j (V_rj / C) (x_r - x_j) / d_rj (V is symmetric).
template <typename Dtype>
CM_HOST_DEVICE int margin_pair_hinges(int r, int j, const int* triplets, const int* anchor_count,
                                      const int* anchor_offset, const Dtype* pos_dist, const Dtype* neg_dist,
                                      const Dtype* beta, const Dtype* labels, int num_classes, Dtype margin) {
  int hinges = 0;
  for (int side = 0; side < 2; ++side) {
    const int anchor = side == 0 ? r : j, other = side == 0 ? j : r;
    const Dtype anchor_beta = beta[margin_class_of(labels[anchor], num_classes)];
    const int begin = anchor_offset[anchor], end = begin + anchor_count[anchor];
    for (int t = begin; t < end; ++t) {
      if (triplets[3 * static_cast<std::size_t>(t) + 1] == other &&
          margin_pos_argument(pos_dist[t], anchor_beta, margin) > Dtype(0)) {
        ++hinges;
      }
      if (triplets[3 * static_cast<std::size_t>(t) + 2] == other &&
          margin_neg_argument(neg_dist[t], anchor_beta, margin) > Dtype(0)) {
        --hinges;
      }
    }
  }
  return hinges;
}

/// The backward's pair coefficient (V_rj * scale) / d_rj, scale = loss_weight / C; 0 where V_rj = 0 or r = j.
template <typename Dtype>
CM_HOST_DEVICE Dtype margin_pair_coefficient(int hinges, Dtype scale, Dtype distance) {
  return hinges == 0 ? Dtype(0) : math::mul_rn(static_cast<Dtype>(hinges), scale) / distance;
}

/// Element k of dE/dx_r: sum_j coefficient_rj (x_rk - x_jk), j increasing.
template <typename Dtype>
CM_HOST_DEVICE Dtype margin_gradient_element(int n, int dim, int r, int k, const Dtype* embedding,
                                             const Dtype* coefficient_row) {
  const Dtype x_rk = embedding[static_cast<std::size_t>(r) * dim + k];
  Dtype sum = Dtype(0);
  for (int j = 0; j < n; ++j) {
    if (coefficient_row[j] != Dtype(0)) {
      const Dtype diff = x_rk - embedding[static_cast<std::size_t>(j) * dim + k];
      sum = math::add_rn(sum, math::mul_rn(coefficient_row[j], diff));
    }
  }
  return sum;
}

/// d(sum of terms)/d beta_c before the 1/C scale: sum over the triplets whose anchor is of class c, t increasing.
template <typename Dtype>
CM_HOST_DEVICE Dtype margin_beta_sum(int c, int triplet_count, const int* triplets, const Dtype* pos_dist,
                                     const Dtype* neg_dist, const Dtype* beta, const Dtype* labels, int num_classes,
                                     Dtype margin, Dtype nu) {
  Dtype sum = Dtype(0);
  for (int t = 0; t < triplet_count; ++t) {
    const int anchor = triplets[3 * static_cast<std::size_t>(t)];
    if (margin_class_of(labels[anchor], num_classes) != c) continue;
    sum = math::add_rn(sum, margin_triplet_dbeta(pos_dist[t], neg_dist[t], beta[c], margin, nu));
  }
  return sum;
}

/// The loss's sum and C over the triplets, t increasing (the sum in double); E = sum / C, or 0 when C = 0.
template <typename Dtype>
CM_HOST_DEVICE Dtype margin_loss_value(int triplet_count, const int* triplets, const Dtype* pos_dist,
                                       const Dtype* neg_dist, const Dtype* beta, const Dtype* labels,
                                       int num_classes, Dtype margin, Dtype nu, int* active_count) {
  double sum = 0.0;
  int active = 0;
  for (int t = 0; t < triplet_count; ++t) {
    const Dtype anchor_beta = beta[margin_class_of(labels[triplets[3 * static_cast<std::size_t>(t)]], num_classes)];
    sum += static_cast<double>(margin_triplet_term(pos_dist[t], neg_dist[t], anchor_beta, margin, nu));
    active += margin_triplet_active(pos_dist[t], neg_dist[t], anchor_beta, margin);
  }
  *active_count = active;
  return active > 0 ? static_cast<Dtype>(sum / active) : Dtype(0);
}

// ---------------------------------------------------------------------------------------------------------------
// CPU. Host pointers.

/// Forward pass: samples the triplets and computes the loss.
/// @param n, dim      batch size (n >= 1) and embedding length
/// @param embedding   [n*dim] x_i, row-major
/// @param labels      [n] integer class ids (margin_find_invalid_label: none invalid)
/// @param beta        [max(1, num_classes)]
/// @param iteration   the pass number (draws differ from pass to pass; mod 2^32)
/// @param capacity    margin_triplet_capacity(labels, n, options)
/// @param mining      outputs (triplets, distances, counts), read by the backward pass
/// @param workspace   margin_workspace_bytes<Dtype>(n, options, Device::kCpu) bytes, 8-byte aligned
/// @param loss        [1] E
template <typename Dtype>
void margin_forward_cpu(int n, int dim, const Dtype* embedding, const Dtype* labels, const Dtype* beta,
                        const MarginOptions& options, uint64_t iteration, int capacity,
                        const MarginMining<Dtype>& mining, void* workspace, Dtype* loss);

/// Backward pass: the exact gradient of the forward's E given its triplets, times loss_weight, written (not
/// accumulated) into embedding_diff ([n*dim]) and beta_diff ([max(1, num_classes)]); either may be null.
template <typename Dtype>
void margin_backward_cpu(int n, int dim, const Dtype* embedding, const Dtype* labels, const Dtype* beta,
                         const MarginOptions& options, const MarginMining<Dtype>& mining, Dtype loss_weight,
                         void* workspace, Dtype* embedding_diff, Dtype* beta_diff);

// ---------------------------------------------------------------------------------------------------------------
// CUDA, defined in margin.cu (CUDA builds only). Same arguments after the context (common/cuda_context.hpp; no GEMM,
// so its cuBLAS handle may be null), with device pointers (labels, beta, mining, workspace =
// margin_workspace_bytes<Dtype>(n, options, Device::kGpu), 256-byte aligned), `loss` a device scalar, loss_weight a
// host value; queued on context.stream, no host synchronisation. Each step is one of the functions above run by one
// thread (an anchor, a pair, an element), the serial sums (offsets, loss, C, beta) by one thread in the CPU's order,
// with products rounded before they are added (mul_rn/add_rn), so the distances, the loss and the gradients are the
// CPU's bits where the device's sqrt (IEEE) agrees, and so are the sampler's weights (the kit's own log and exp,
// common/exp_log.hpp, not the device's) and therefore the triplets. Deterministic (no atomics).
template <typename Dtype>
void margin_forward_gpu(const CudaContext& context, int n, int dim, const Dtype* embedding, const Dtype* labels,
                        const Dtype* beta, const MarginOptions& options, uint64_t iteration, int capacity,
                        const MarginMining<Dtype>& mining, void* workspace, Dtype* loss);

template <typename Dtype>
void margin_backward_gpu(const CudaContext& context, int n, int dim, const Dtype* embedding, const Dtype* labels,
                         const Dtype* beta, const MarginOptions& options, const MarginMining<Dtype>& mining,
                         Dtype loss_weight, void* workspace, Dtype* embedding_diff, Dtype* beta_diff);

}  // namespace caffe_mining

#endif  // CAFFE_MINING_MARGIN_HPP_
