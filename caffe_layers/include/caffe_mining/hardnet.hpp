// HardNet loss (Mishchuk et al. 2017, "Working hard to know your neighbor's margins"): a triplet-style loss whose
// negative for each anchor/positive pair is mined inside the batch. Caffe-free core: plain pointers and sizes, the
// caller owns every buffer. The element math below is shared by the CPU (.cpp) and CUDA (.cu) implementations.
//
// Notation (n pairs of dim-dimensional descriptors, row-major):
//   a_i = anchor[i*dim ...], p_j = positive[j*dim ...]
//   D_ij = sqrt(max(|a_i|^2 + |p_j|^2 - 2 a_i.p_j, 0) + eps)        (n x n, one GEMM)
//   pos_i = D_ii
//   D_ij is a valid negative for row i when j != i, D_ij >= duplicate_threshold and (labels given) label_i != label_j.
//   Candidate j of row i (j != i): without anchor_swap its value is D_ij; with anchor_swap it is the smaller of the
//   valid ones of D_ij (positive j as negative of anchor i) and D_ji (anchor j as negative of positive i); at equal
//   value D_ij is kept. Candidate j is valid when at least one of the two is valid.
//   count_i = number of valid candidates of row i; rows with count_i = 0 are "empty".
//   Row loss l(pos, neg):
//     TRIPLET_MARGIN  max(margin + pos - neg, 0)
//     SOFTMAX         -log(e^(2-pos) / (e^(2-pos) + e^(2-neg))) = softplus(pos - neg)
//     CONTRASTIVE     max(margin - neg, 0) + pos
//   Batch reduce, per non-empty row:
//     MIN      l(pos_i, min_j c_ij)                    (ties: lowest j)
//     AVERAGE  (1/count_i) sum_j l(pos_i, c_ij)        (over valid candidates)
//     RANDOM   l(pos_i, c_ik), k = the floor(u_i * count_i)-th valid candidate in increasing j (u_i in [0,1) given)
//   loss = mean of the row losses over the R non-empty rows; 0 when R = 0 (then all gradients are 0 as well).
//   Non-finite input: when a feature is NaN or +-inf, or the features are so large that a squared distance could
//   overflow (2 (max_i |a_i|^2 + max_j |p_j|^2) is not finite), the loss is NaN, no row is mined (every row empty,
//   valid_rows = -1) and the backward writes NaN into every gradient element: a diverged batch never looks like
//   one without negatives.
//
// Divergences from the authors' PyTorch code (loss_HardNet / distance_matrix_vector in DagnyT/hardnet):
//   - the squared distance is clamped at 0 before eps is added: rounding in |a|^2+|p|^2-2a.p can go negative,
//     which there gives sqrt(negative) = NaN; their extra "+1e-8" after the square root is dropped (it cancels in
//     the triplet loss and only shifts the others by 1e-8);
//   - duplicates (D < 0.008) and the diagonal are excluded from the mining instead of being pushed up by +10; with
//     labels, same-label pairs are excluded too; a row with no valid negative is left out of the mean (there it would
//     get neg = D + 10);
//   - SOFTMAX is computed as softplus(pos - neg) without their "+1e-8" in the denominator (stable for any distance);
//   - AVERAGE averages each row over its valid negatives and pairs them with that row's pos_i (theirs averages all
//     n*n entries, diagonal included, pairing D_ij with pos_j);
//   - RANDOM draws one valid candidate per row from caller-given uniforms (theirs takes column perm[i] of a random
//     permutation, which may be the row's own positive or a duplicate).
#ifndef CAFFE_MINING_HARDNET_HPP_
#define CAFFE_MINING_HARDNET_HPP_

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
#include "caffe_mining/losses/hardnet_row_loss.hpp"

namespace caffe_mining {

/// How a row's negative is chosen; values mirror HardNetLossParameter.BatchReduce in caffe.proto.
enum class HardNetBatchReduce : int { kMin = 0, kAverage = 1, kRandom = 2 };

/// Options of the loss; defaults follow the authors' loss_HardNet.
struct HardNetOptions {
  double margin = 1.0;                ///< triplet / contrastive margin
  bool anchor_swap = false;           ///< also mine D_ji (other anchors against positive i)
  HardNetBatchReduce batch_reduce = HardNetBatchReduce::kMin;
  HardNetLossType loss_type = HardNetLossType::kTripletMargin;
  double eps = 1e-6;                  ///< added to the squared distance inside the square root (> 0)
  double duplicate_threshold = 0.008; ///< a candidate distance below this is a duplicate, never a negative

  /// Why these options cannot be used in Dtype, or "" when they can (hardnet_options_problem).
  template <typename Dtype>
  std::string validate() const;
};

/// Per-row results of the forward pass, read again by the backward pass. All caller-owned, host pointers for the
/// CPU functions and device pointers for the GPU functions. Sizes in brackets.
template <typename Dtype>
struct HardNetMining {
  Dtype* dist;         ///< [n*n] D_ij, row-major (row = anchor, column = positive); the CPU path (MIN and RANDOM)
                       ///< and the GPU path (MIN without anchor swap) leave the dot products a_i.p_j there instead
                       ///< (only AVERAGE's backward reads D)
  Dtype* pos_dist;     ///< [n] pos_i = D_ii
  Dtype* neg_dist;     ///< [n] value of the chosen candidate (MIN/RANDOM) or of the hardest one (AVERAGE); 0 if none
  int* neg_index;      ///< [n] j of that candidate, -1 when the row has no valid negative
  int* neg_swapped;    ///< [n] 1 when that candidate's value is D_ji (anchor swap), else 0
  int* neg_count;      ///< [n] count_i, the number of valid candidates of row i
  Dtype* row_loss;     ///< [n] loss of row i (0 for an empty row)
  Dtype* dloss_dpos;   ///< [n] d row_loss_i / d pos_i (AVERAGE: already averaged over the candidates)
  Dtype* dloss_dneg;   ///< [n] d row_loss_i / d neg_dist_i (MIN and RANDOM; 0 for AVERAGE)
  int* valid_rows;     ///< [1] R, the number of non-empty rows; -1 when the input is not finite (loss NaN)
};

/// Why `options` cannot be used in Dtype, or "" when they can: margin >= 0, eps > 0, duplicate_threshold >= 0, all
/// finite as given and once rounded to Dtype, and known enum values.
template <typename Dtype>
std::string hardnet_options_problem(const HardNetOptions& options) {
  std::string problem = option_range_problem<Dtype>("margin", options.margin, 0.0, false);
  if (problem.empty()) problem = option_range_problem<Dtype>("eps", options.eps, 0.0, true);
  if (problem.empty()) {
    problem = option_range_problem<Dtype>("duplicate_threshold", options.duplicate_threshold, 0.0, false);
  }
  const int reduce = static_cast<int>(options.batch_reduce), type = static_cast<int>(options.loss_type);
  if (problem.empty() && (reduce < 0 || reduce > 2)) problem = "batch_reduce must be MIN, AVERAGE or RANDOM";
  if (problem.empty() && (type < 0 || type > 2)) problem = "loss_type must be TRIPLET_MARGIN, SOFTMAX or CONTRASTIVE";
  return problem;
}

template <typename Dtype>
std::string HardNetOptions::validate() const {
  return hardnet_options_problem<Dtype>(*this);
}

/// Columns per block when the CPU path mines a row by itself (MIN without anchor swap).
constexpr int kHardnetRowBlock = 64;

/// The workspace as Dtype elements (what hardnet_workspace_bytes counts; the passes index it so): 2n (squared
/// norms) + one per kHardnetRowBlock columns (the row's block minima) + 3n (the columns' side of the anchor swap on
/// the CPU), n*n + 2n for AVERAGE (the backward's weight matrix and its row/column sums; the forward's lanes use 9n of
/// it with anchor swap) plus kHardnetPagePad (room for the CPU to start the weight matrix at another offset in a 4 KB
/// page than the distance matrix).
constexpr std::size_t kHardnetPagePad = 1024;
inline std::size_t hardnet_scratch_count(int n, const HardNetOptions& options) {
  const std::size_t rows = static_cast<std::size_t>(n);
  if (options.batch_reduce == HardNetBatchReduce::kAverage) return rows * rows + 2 * rows + kHardnetPagePad;
  return 5 * rows + (rows + kHardnetRowBlock - 1) / kHardnetRowBlock;
}

/// Bytes of the workspace that hardnet_forward_* and hardnet_backward_* take, on either path (the size a caller
/// allocates, as for every loss of the kit).
template <typename Dtype>
std::size_t hardnet_workspace_bytes(int n, const HardNetOptions& options, Device /*device*/) {
  return hardnet_scratch_count(n, options) * sizeof(Dtype);
}

/// The largest n whose buffers (the n x n matrix and the scratch) each hold at most INT_MAX elements, the limit of
/// a Caffe blob: 46340 (n * n <= INT_MAX), 46339 for AVERAGE (n * n + 2n + kHardnetPagePad).
inline int hardnet_max_rows(const HardNetOptions& options) {
  int n = 46340;  // floor(sqrt(INT_MAX))
  while (static_cast<std::size_t>(n) * n > INT_MAX || hardnet_scratch_count(n, options) > INT_MAX) --n;
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// Element math shared by both paths.

// The distance (distances/dot_distance.hpp) and the row losses (losses/hardnet_row_loss.hpp) are shared headers;
// below, the mining's element rules.

/// Whether column j may hold a negative of row i at all, whatever its distance: j != i and, when labels are given
/// (labels may be null), another class. Every miner of this loss (CPU scans, CUDA kernels) asks this one function.
template <typename Dtype>
CM_HOST_DEVICE bool hardnet_column_allowed(const Dtype* labels, int i, int j) {
  return i != j && (labels == nullptr || labels[i] != labels[j]);
}

/// Whether D_ij (value `d`) may serve as a negative for the pair (i, j): an allowed column, not a duplicate.
template <typename Dtype>
CM_HOST_DEVICE bool hardnet_negative_valid(const Dtype* labels, int i, int j, Dtype d, Dtype duplicate_threshold) {
  return !(d < duplicate_threshold) && hardnet_column_allowed(labels, i, j);
}

/// Candidate j of row i: its value, whether it is valid and whether the value is the swapped D_ji.
template <typename Dtype>
struct HardNetCandidate {
  Dtype value;
  bool valid;
  bool swapped;
};

/// Candidate j of row i from its two values: D_ij (valid_ij) and, with anchor_swap, D_ji (valid_ji). The smaller
/// valid one; at equal value D_ij (not swapped).
template <typename Dtype>
CM_HOST_DEVICE HardNetCandidate<Dtype> hardnet_candidate_of(Dtype d_ij, bool valid_ij, Dtype d_ji, bool valid_ji,
                                                           bool anchor_swap) {
  HardNetCandidate<Dtype> cand;
  cand.value = d_ij;
  cand.valid = valid_ij;
  cand.swapped = false;
  if (anchor_swap && valid_ji && (!valid_ij || d_ji < d_ij)) {
    cand.value = d_ji;
    cand.valid = true;
    cand.swapped = true;
  }
  return cand;
}

/// Candidate j of row i from the distance matrix (n x n, row-major): hardnet_candidate_of D_ij and D_ji.
template <typename Dtype>
CM_HOST_DEVICE HardNetCandidate<Dtype> hardnet_candidate(const Dtype* dist, const Dtype* labels, int n, int i, int j,
                                                        Dtype duplicate_threshold, bool anchor_swap) {
  const Dtype d_ij = dist[static_cast<std::size_t>(i) * n + j];
  const bool valid_ij = hardnet_negative_valid(labels, i, j, d_ij, duplicate_threshold);
  if (!anchor_swap) return hardnet_candidate_of(d_ij, valid_ij, d_ij, false, false);
  const Dtype d_ji = dist[static_cast<std::size_t>(j) * n + i];
  return hardnet_candidate_of(d_ij, valid_ij, d_ji, hardnet_negative_valid(labels, j, i, d_ji, duplicate_threshold),
                              true);
}

/// MIN order: (value, j) lexicographic; index -1 means "none yet" and loses to any real candidate.
template <typename Dtype>
CM_HOST_DEVICE bool hardnet_harder(Dtype value_a, int index_a, Dtype value_b, int index_b) {
  if (index_a < 0) return false;
  if (index_b < 0) return true;
  return value_a < value_b || (value_a == value_b && index_a < index_b);
}

/// RANDOM: rank (0-based, among the valid candidates in increasing j) picked by a uniform u in [0, 1).
template <typename Dtype>
CM_HOST_DEVICE int hardnet_random_rank(Dtype uniform, int count) {
  int rank = static_cast<int>(floor(static_cast<double>(uniform) * count));
  if (rank >= count) rank = count - 1;  // u rounded up to 1 in float
  return rank < 0 ? 0 : rank;
}

/// AVERAGE backward: the coefficient V_ij (i != j) of the distance gradient dD_ij/d(a_i, p_j) = +-(a_i - p_j)/D_ij,
/// before the 1/R and top-diff scale. Two rows can use D_ij: row i as its own candidate j (not swapped) and row j as
/// the swapped value of its candidate i.
template <typename Dtype>
CM_HOST_DEVICE Dtype hardnet_average_weight(const Dtype* dist, const Dtype* labels, const Dtype* pos_dist,
                                           const int* neg_count, int n, int i, int j, HardNetLossType type,
                                           Dtype margin, Dtype duplicate_threshold, bool anchor_swap) {
  Dtype weight = Dtype(0);
  const HardNetCandidate<Dtype> of_row_i = hardnet_candidate(dist, labels, n, i, j, duplicate_threshold, anchor_swap);
  if (of_row_i.valid && !of_row_i.swapped) {
    weight += hardnet_row_loss_dneg(type, margin, pos_dist[i], of_row_i.value) / Dtype(neg_count[i]);
  }
  if (anchor_swap) {
    const HardNetCandidate<Dtype> of_row_j =
        hardnet_candidate(dist, labels, n, j, i, duplicate_threshold, anchor_swap);
    if (of_row_j.valid && of_row_j.swapped) {
      weight += hardnet_row_loss_dneg(type, margin, pos_dist[j], of_row_j.value) / Dtype(neg_count[j]);
    }
  }
  return weight;
}

// ---------------------------------------------------------------------------------------------------------------
// CPU (cblas). Host pointers.

/// Lanes of the CPU's float row scan (MIN and RANDOM mining, with or without anchor swap): 8 with AVX2 where the CPU
/// has it, else 4 (SSE2); 1 without SIMD. CAFFE_MINING_CPU_LANES=sse2 in the environment (read once) forces 4. The
/// decisions and values are the same bits on every path.
int hardnet_cpu_lanes();

/// Forward pass.
/// @param n, dim      number of pairs (n >= 1; n = 1 gives R = 0) and descriptor length
/// @param anchor      [n*dim] a_i, row-major
/// @param positive    [n*dim] p_i, row-major (row i matches anchor row i)
/// @param labels      [n] class ids, or null for "all rows distinct" (only the duplicate rule masks)
/// @param uniforms    [n] values in [0, 1), one per row; read only for RANDOM (may be null otherwise)
/// @param mining      outputs, see HardNetMining; read by the backward pass
/// @param workspace   hardnet_workspace_bytes<Dtype>(n, options, Device::kCpu) bytes, aligned for Dtype; the
///                    backward pass reads what the forward pass left there
/// @param loss        [1] the mean row loss over the non-empty rows (0 when none)
template <typename Dtype>
void hardnet_forward_cpu(int n, int dim, const Dtype* anchor, const Dtype* positive, const Dtype* labels,
                         const Dtype* uniforms, const HardNetOptions& options, const HardNetMining<Dtype>& mining,
                         void* workspace, Dtype* loss);

/// Backward pass: exact gradient of the forward's loss, times loss_weight (the top diff), written (not
/// accumulated) into anchor_diff and positive_diff ([n*dim] each; either may be null). Must follow the forward pass
/// with the same inputs and options. MIN/RANDOM: O(n*dim); AVERAGE: two n x n x dim GEMMs.
template <typename Dtype>
void hardnet_backward_cpu(int n, int dim, const Dtype* anchor, const Dtype* positive, const Dtype* labels,
                          const HardNetOptions& options, const HardNetMining<Dtype>& mining, Dtype loss_weight,
                          void* workspace, Dtype* anchor_diff, Dtype* positive_diff);

// ---------------------------------------------------------------------------------------------------------------
// CUDA (cuBLAS), defined in hardnet.cu (only in CUDA builds). Same arguments as the CPU functions after the context
// (common/cuda_context.hpp), with device pointers (uniforms too); `loss` is a device pointer, loss_weight a host
// value. Everything, the GEMMs included, is queued on the context's stream with no host synchronisation: for the
// call, its cuBLAS handle is set to that stream and to host pointer mode (alpha and beta are host scalars), and its
// previous stream and pointer mode are restored before returning.
//
// What the GPU guarantees, and where it differs from the CPU by design:
//   - Deterministic: the same inputs give the same bits on every run (no floating-point atomics; every sum has a
//     fixed order).
//   - Decisions as the CPU's rule, made by the same element functions (hardnet_gpu_steps.hpp; the CPU tests run
//     those steps serially against the CPU core and find the same picks, counts and values bit for bit when they are
//     fed the same dot products and norms). MIN without anchor swap mines on the squared distance as the CPU does
//     (one square root per row; `dist` then keeps the dot products, as on the CPU).
//   - Inputs differ in the last bits: the dot products come from cuBLAS (its own blocking, FMA) and the squared
//     norms from a warp's tree sum with FMA, neither bit-equal to cblas on the CPU. So D, and a pick that sits
//     exactly at a tie or at the duplicate threshold, can differ between CPU and GPU where the distances differ.
//     Ties resolve by index among exactly equal distances on both paths. The squared norms are summed in one fixed
//     order (identical rows, identical norms), but the dot products are the GEMM's: OpenBLAS's float32 SGEMM rounds
//     identical columns differently where they fall in different tiles (seen: copies of one positive at columns 3,
//     5, 9, 17 of N = 40, D = 32 gave column 9 a smaller a.p), and cuBLAS promises nothing either (a GPU test
//     checks it). So identical positives at different columns need not tie in HardNet; the contrastive loss, which
//     sums its own squared distances, always ties them.
//   - Values up to rounding: the loss mean and AVERAGE's sums add in a tree order. (SOFTMAX's softplus and sigmoid
//     are the kit's own exp and log1p, common/exp_log.hpp: the same bits on the device as on the CPU.) The GPU tests compare with the CPU at the relative tolerance of
//     tests/gpu/gpu_support.py (1e-4 in float, 1e-10 in double), and exactly where the inputs make every product
//     and sum exact (dyadic values of few bits).
//   - MIN/RANDOM backward: each gradient element is summed in the CPU's order (rows increasing, a row's positive
//     pair then its negative), every product rounded before it is added (no FMA), so given the same mining outputs
//     and inputs the gradients are the CPU's bit for bit; AVERAGE goes through two GEMMs (rounding differs).
//   - Non-finite inputs (a non-finite squared norm, or 2 (max|a|^2 + max|p|^2) overflowing): loss NaN, every row
//     empty (neg_index -1, neg_count 0, row_loss 0, pos_dist NaN) and valid_rows -1, which tells the backward to
//     write NaN into every gradient element, exactly as on the CPU. With AVERAGE and no valid row the gradients are +0 as on the CPU
//     (the GEMMs, queued before the device knows, still run).
//   - Needs IEEE square roots (the default; never build this file with -use_fast_math).

template <typename Dtype>
void hardnet_forward_gpu(const CudaContext& context, int n, int dim, const Dtype* anchor, const Dtype* positive,
                         const Dtype* labels, const Dtype* uniforms, const HardNetOptions& options,
                         const HardNetMining<Dtype>& mining, void* workspace, Dtype* loss);

template <typename Dtype>
void hardnet_backward_gpu(const CudaContext& context, int n, int dim, const Dtype* anchor, const Dtype* positive,
                          const Dtype* labels, const HardNetOptions& options, const HardNetMining<Dtype>& mining,
                          Dtype loss_weight, void* workspace, Dtype* anchor_diff, Dtype* positive_diff);

}  // namespace caffe_mining

#endif  // CAFFE_MINING_HARDNET_HPP_
