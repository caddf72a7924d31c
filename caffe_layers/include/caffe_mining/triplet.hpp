// TripletLoss with labels: in-batch triplet mining over one labelled batch of embeddings. Caffe-free core: plain
// pointers and sizes, the caller owns every buffer. The per-anchor steps below are shared by the CPU (.cpp) and
// CUDA (.cu) implementations: the CPU runs them anchor after anchor, the CUDA kernels one thread per anchor.
//
// Notation (n rows x_i of dim values, row-major; labels y_i, class ids held in the features' type):
//   positives of anchor a: P(a) = {j != a : y_j = y_a}        negatives of a: N(a) = {j : y_j != y_a}
//   D_ij = sqrt(max(|x_i|^2 + |x_j|^2 - 2 x_i.x_j, 0) + eps)        (n x n, one SYRK for the dot products)
//   squared: D_ij = max(|x_i|^2 + |x_j|^2 - 2 x_i.x_j, 0)           (no eps, no root)
//   D is symmetric to the bit: D_ji is a copy of D_ij (from one dot product), so a pair's distance is one value
//   whichever row reads it.
//   Term l(d_ap, d_an): max(margin + d_ap - d_an, 0), or softplus(d_ap - d_an) with soft_margin
//   (losses/triplet_row_loss.hpp; hinge derivative 0 at the kink; softplus and sigmoid by the kit's own exponential
//   and log1p, common/exp_log.hpp, within 2 ulp: the same bits on the CPU, in its lanes and on the GPU).
//   Mining:
//     BATCH_HARD (default) every anchor a with P(a) and N(a) non-empty gives one term: p = argmax_{P(a)} D_aj,
//                n = argmin_{N(a)} D_aj (ties: lowest index; miners/batch_hard.hpp). E = mean over those anchors.
//     BATCH_ALL  every (a, p, n) with p in P(a), n in N(a). E = sum l / K, K = number of terms with l > 0 (as
//                computed in Dtype); E = 0 when K = 0. The gradient treats K as the constant it is almost
//                everywhere (miners/batch_all.hpp).
//     SEMI_HARD  every ordered positive pair (a, p), p in P(a), of an anchor with N(a) non-empty gives one term:
//                n = the closest negative with D_an > D_ap, else the farthest negative (ties: lowest index;
//                miners/semi_hard.hpp). E = mean over those pairs.
//   An anchor with no positive or no negative (a pair whose anchor has no negative) gives no term and is left out
//   of the mean; with no term at all E = 0 and every gradient is 0, never NaN.
//   Gradient: exact, dE/dD_ij accumulated per anchor row into an n x n weight matrix, then through
//   dD_ij/dx_i = (x_i - x_j)/D_ij (squared: 2 (x_i - x_j)) with one GEMM: with S = V + V^T, V_ij = W_ij dD_ij,
//   dE/dX = diag(S 1) X - S X (S X by a GEMM, or through S's non-zero entries when it is sparse). O(n^2) memory in
//   every mode (BATCH_ALL's n^3 terms are never stored). The GPU runs the per-anchor step below; the CPU its own
//   lane scans of each mining (triplet.cpp): the same decisions and the same sums in the same order, to the bit.
//   Non-finite input: a NaN or infinite feature, or features so large that a squared distance could overflow
//   (4 max_i |x_i|^2 not finite), give E = NaN, no mined triplet (every index -1), terms = -1, and NaN in every
//   gradient element. Labels must be finite integers (triplet_find_invalid_label).
//
// Where it differs from the papers and the libraries:
//   - Hermans et al. (batch hard, and their "batch all" with its mean over the non-zero terms) and TF Addons'
//     triplet_semihard_loss take the root of max(d^2, 0) with a zero fix-up, whose derivative is infinite at
//     d = 0; here eps (1e-12) sits inside the root, so two identical embeddings give a finite gradient (0: the
//     numerator x_i - x_j is 0). The derivative is (x_i - x_j)/D even where rounding made the clamped value 0.
//   - An anchor (SEMI_HARD: a pair) with no positive or no negative is left out of the mean. TF Addons'
//     triplet_semihard_loss divides by the number of positive pairs, NaN when there is none (TF Addons #1676,
//     #2447), and its hard loss fills missing positives with 0 so that their negatives are still pushed away;
//     neither happens here. The semi-hard fallback is the farthest (easiest) negative, as TF Addons defines it.
//   - BATCH_ALL's K counts the terms with l > 0 (Hermans et al.'s "non-zero" mean); 0 terms give E = 0, not NaN.
//   - Ties are decided by index on distances that are bit-identical; distances that are mathematically equal but
//     rounded differently by the GEMM (identical embeddings at different rows: BLAS may round their dot products
//     differently by tile position) need not tie.
#ifndef CAFFE_MINING_TRIPLET_HPP_
#define CAFFE_MINING_TRIPLET_HPP_

#include <climits>
#include <cmath>
#include <cstddef>
#include <string>

#include "caffe_mining/common/cuda_context.hpp"
#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/common/math.hpp"
#include "caffe_mining/common/option_checks.hpp"
#include "caffe_mining/common/workspace.hpp"
#include "caffe_mining/distances/dot_distance.hpp"
#include "caffe_mining/losses/triplet_row_loss.hpp"
#include "caffe_mining/miners/batch_all.hpp"
#include "caffe_mining/miners/batch_hard.hpp"
#include "caffe_mining/miners/label_masks.hpp"
#include "caffe_mining/miners/semi_hard.hpp"

namespace caffe_mining {

/// Which triplets count; values mirror TripletLossParameter.Mining in caffe.proto.
enum class TripletMiner : int { kBatchHard = 0, kBatchAll = 1, kSemiHard = 2 };

/// Options of the loss (triplet_loss_param); the defaults are the proto's.
struct TripletOptions {
  double margin = 0.2;       ///< hinge margin (>= 0; unused with soft_margin)
  bool soft_margin = false;  ///< softplus(d_ap - d_an) instead of the hinge
  bool squared = false;      ///< squared distances (no root, no eps)
  TripletMiner mining = TripletMiner::kBatchHard;
  double eps = 1e-12;        ///< added to the squared distance inside the root (> 0)

  /// Why these options cannot be used in Dtype, or "" when they can: margin >= 0, eps > 0, both finite as given
  /// and once rounded to Dtype, and a known mining value.
  template <typename Dtype>
  std::string validate() const {
    std::string problem = option_range_problem<Dtype>("margin", margin, 0.0, false);
    if (problem.empty()) problem = option_range_problem<Dtype>("eps", eps, 0.0, true);
    const int rule = static_cast<int>(mining);
    if (problem.empty() && (rule < 0 || rule > 2)) problem = "mining must be BATCH_HARD, BATCH_ALL or SEMI_HARD";
    return problem;
  }
};

/// Results of the forward pass, read again by the backward pass. Caller-owned; host pointers for the CPU
/// functions, device pointers for the GPU functions. Sizes in brackets.
template <typename Dtype>
struct TripletMining {
  Dtype* dist;             ///< [n*n] D, symmetric
  Dtype* weight;           ///< [n*n] row a: d(sum of anchor a's terms)/dD_aj (before the 1/terms scale)
  int* positive;           ///< [n] BATCH_HARD: each anchor's farthest positive, -1 when it gives no term
  int* negative;           ///< [n] BATCH_HARD: its closest negative, -1 when it gives no term
  int* pair_negative;      ///< [n*n] SEMI_HARD: entry (a, p) the negative of the positive pair (a, p); -1 when
                           ///< (a, p) is no positive pair or a has no negative. positive and negative are
                           ///< read and written in BATCH_HARD only, pair_negative in SEMI_HARD only (null
                           ///< elsewhere is fine).
  Dtype* row_loss;         ///< [n] sum of anchor a's terms
  long long* row_terms;    ///< [n] how many of anchor a's terms the mean counts (BATCH_ALL: those with l > 0)
  long long* terms;        ///< [1] the mean's denominator, sum of row_terms; -1 when the input is not finite
};

/// Index of the first label that is not a finite integer value, or -1.
template <typename Dtype>
int triplet_find_invalid_label(const Dtype* labels, int n) {
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(labels[i]) || std::floor(labels[i]) != labels[i]) return i;
  }
  return -1;
}

/// The workspace as Dtype elements (what triplet_workspace_bytes counts; the passes index it so): n (squared
/// norms), n*n (the backward's S) and n (its row sums), then 3n ints (the CPU's class lists, miners/class_members.hpp;
/// an int is no wider than a Dtype).
inline std::size_t triplet_scratch_count(int n) {
  const std::size_t rows = static_cast<std::size_t>(n);
  return rows * rows + 5 * rows;
}

/// Where the CPU passes keep their class lists in the workspace: 3n ints after the row sums.
template <typename Dtype>
int* triplet_class_space(int n, Dtype* scratch) {
  const std::size_t rows = static_cast<std::size_t>(n);
  return reinterpret_cast<int*>(scratch + rows * rows + 2 * rows);
}

/// Bytes of the workspace that triplet_forward_* and triplet_backward_* take, on either path (the size a caller
/// allocates, as for every loss of the kit).
template <typename Dtype>
std::size_t triplet_workspace_bytes(int n, const TripletOptions& /*options*/, Device /*device*/) {
  return triplet_scratch_count(n) * sizeof(Dtype);
}

/// The largest n whose n x n buffers and scratch each hold at most INT_MAX elements (a Caffe blob's limit).
inline int triplet_max_rows() {
  int n = 46340;  // floor(sqrt(INT_MAX))
  while (triplet_scratch_count(n) > static_cast<std::size_t>(INT_MAX)) --n;
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// Element math shared by both paths.

/// D from the squared norms and the dot product (distances/dot_distance.hpp): sqrt(max(s, 0) + eps), or max(s, 0)
/// when squared (no eps).
template <typename Dtype>
CM_HOST_DEVICE Dtype triplet_distance(Dtype sq_norm_i, Dtype sq_norm_j, Dtype dot, Dtype eps, bool squared) {
  return squared ? squared_distance_from_dot(sq_norm_i, sq_norm_j, dot, Dtype(0))
                 : distance_from_dot(sq_norm_i, sq_norm_j, dot, eps);
}

/// dD/dx_i = factor * (x_i - x_j): 1/D (0 when D is 0), or 2 when squared.
template <typename Dtype>
CM_HOST_DEVICE Dtype triplet_distance_factor(Dtype d, bool squared) {
  if (squared) return Dtype(2);
  return math::safe_div(Dtype(1), d);
}

/// The per-anchor step of the forward pass: mines anchor a's terms from its row of D and writes row a of the
/// weights and of the decisions, row_loss[a] and row_terms[a]. Reads only row a of D and the labels, writes only
/// anchor a's entries: the anchors can run in any order or in parallel.
template <typename Dtype>
CM_HOST_DEVICE void triplet_anchor_step(TripletMiner miner, const TripletRowLoss<Dtype>& term, int n, int a,
                                        const Dtype* labels, const TripletMining<Dtype>& mining) {
  const std::size_t row_start = static_cast<std::size_t>(a) * n;
  const Dtype* dist_row = mining.dist + row_start;
  Dtype* weight_row = mining.weight + row_start;
  for (int j = 0; j < n; ++j) weight_row[j] = Dtype(0);
  Dtype loss = Dtype(0);
  long long terms = 0;
  if (miner == TripletMiner::kBatchHard) {
    BatchHardPick pick = batch_hard_pick(dist_row, labels, n, a);
    if (pick.positive >= 0 && pick.negative >= 0) {
      const TripletTerm<Dtype> t = term(dist_row[pick.positive], dist_row[pick.negative]);
      weight_row[pick.positive] = t.slope;
      weight_row[pick.negative] = -t.slope;
      loss = t.loss;
      terms = 1;
    } else {
      pick.positive = pick.negative = -1;
    }
    mining.positive[a] = pick.positive;
    mining.negative[a] = pick.negative;
  } else if (miner == TripletMiner::kSemiHard) {
    int* pair_row = mining.pair_negative + row_start;
    const bool any_negative = has_negative(labels, n, a);
    for (int p = 0; p < n; ++p) {
      pair_row[p] = -1;
      if (!any_negative || !is_positive_of(labels, a, p)) continue;
      const int k = semi_hard_negative(dist_row, labels, n, a, dist_row[p]);
      const TripletTerm<Dtype> t = term(dist_row[p], dist_row[k]);
      pair_row[p] = k;
      weight_row[p] += t.slope;
      weight_row[k] -= t.slope;
      loss += t.loss;
      ++terms;
    }
  } else {
    const BatchAllRow<Dtype> row = batch_all_row(dist_row, labels, n, a, term, weight_row);
    loss = row.loss;
    terms = row.active;
  }
  mining.row_loss[a] = loss;
  mining.row_terms[a] = terms;
}

/// Entry (i, j) of the backward's symmetric matrix S = V + V^T with V_ij = scale W_ij dD_ij (0 on the diagonal).
template <typename Dtype>
CM_HOST_DEVICE Dtype triplet_gradient_weight(const Dtype* dist, const Dtype* weight, int n, int i, int j,
                                            Dtype scale, bool squared) {
  if (i == j) return Dtype(0);
  const std::size_t ij = static_cast<std::size_t>(i) * n + j, ji = static_cast<std::size_t>(j) * n + i;
  return scale * (weight[ij] + weight[ji]) * triplet_distance_factor(dist[ij], squared);
}

// ---------------------------------------------------------------------------------------------------------------
// CPU (cblas). Host pointers.

/// Forward pass.
/// @param n, dim      rows (n >= 1) and embedding length
/// @param embedding   [n*dim] x_i, row-major
/// @param labels      [n] class ids (finite integers)
/// @param mining      outputs, see TripletMining; read by the backward pass
/// @param workspace   triplet_workspace_bytes<Dtype>(n, options, Device::kCpu) bytes, aligned for Dtype
/// @param loss        [1] E
template <typename Dtype>
void triplet_forward_cpu(int n, int dim, const Dtype* embedding, const Dtype* labels, const TripletOptions& options,
                         const TripletMining<Dtype>& mining, void* workspace, Dtype* loss);

/// Backward pass: the exact gradient of the forward's E times loss_weight (the top diff), written (not
/// accumulated) into embedding_diff ([n*dim]). Must follow the forward pass with the same inputs, options and
/// workspace (SEMI_HARD reads the class lists the forward left there); leaves the mining outputs unchanged. S X is one n x n x dim GEMM when S is dense (BATCH_ALL), a sum over its
/// entries at the picks and their mirrors, gathered row by row without forming S, for the sparse miners
/// (BATCH_HARD, SEMI_HARD; S itself when the picks' list does not fit in the workspace's n x n region).
template <typename Dtype>
void triplet_backward_cpu(int n, int dim, const Dtype* embedding, const TripletOptions& options,
                          const TripletMining<Dtype>& mining, Dtype loss_weight, void* workspace,
                          Dtype* embedding_diff);

// ---------------------------------------------------------------------------------------------------------------
// CUDA (cuBLAS), defined in triplet.cu (CUDA builds only). Same contracts with device pointers; `loss` is a device
// pointer, loss_weight a host value. Queued on context.stream with no host synchronisation; context.cublas is set to
// that stream and host pointer mode for the call and restored before returning (CublasCallScope).
//   - The same per-anchor steps (triplet_anchor_step, one thread per anchor) and the same S entries
//     (triplet_gradient_weight), so the decisions and the terms (the soft margin's too: the kit's exp and log1p,
//     not the device's) are the CPU's wherever the distances are bit-equal; the dot
//     products come from cuBLAS's SYRK and the squared norms from a warp's tree sum, which can differ from the
//     CPU's in the last bits (as for HardNetLoss).
//   - Deterministic: no floating-point atomics; E sums row_loss in a fixed tree order.
template <typename Dtype>
void triplet_forward_gpu(const CudaContext& context, int n, int dim, const Dtype* embedding, const Dtype* labels,
                         const TripletOptions& options, const TripletMining<Dtype>& mining, void* workspace,
                         Dtype* loss);

template <typename Dtype>
void triplet_backward_gpu(const CudaContext& context, int n, int dim, const Dtype* embedding,
                          const TripletOptions& options, const TripletMining<Dtype>& mining, Dtype loss_weight,
                          void* workspace, Dtype* embedding_diff);

}  // namespace caffe_mining

#endif  // CAFFE_MINING_TRIPLET_HPP_
