// Caffe-free core of MiningContrastiveLoss: the contrastive loss of Hadsell et al. (2006), as Caffe's
// ContrastiveLossLayer computes it, restricted to the hardest 1/mining_ratio of the pairs of a batch.
//
// Plain pointers and sizes, no allocation: the caller passes workspace whose size contrastive_workspace_bytes
// gives. The per-pair math is in losses/contrastive_pair.hpp and the selection steps below, CM_HOST_DEVICE
// functions shared by the CPU path (contrastive_mining.cpp) and the CUDA path (contrastive_mining.cu), so CPU tests
// cover the GPU's math. Options: ContrastiveOptions (defaults and validate() stated once).
//
// Shapes: n pairs, each feature of dim values, rows contiguous (row-major n x dim).
//   a, b     n x dim   the two features of each pair
//   sim      n         1 = similar pair, 0 = dissimilar pair (any other value is invalid; find it with
//                      find_invalid_label_*; the forward reads every non-zero label as "similar")
//   diff     n x dim   a - b, written by the forward, read by the backward
//   dist_sq  n         ||a - b||^2
//   cost     n         per-pair cost (see contrastive_cost)
//   picked   n         1 if the pair is among the mined pairs, else 0
// (diff, dist_sq, cost and picked are the caller's ContrastivePairs buffers.)
//
// Loss (K = num_picked pairs, P = set of picked pairs):
//   E = 1/(2K) * sum_{i in P} cost_i,  E = 0 when K = 0.
// Non-finite input: when any pair's dist_sq is NaN or inf (a NaN or inf feature, or an overflowing difference),
// E = NaN and the backward writes NaN into every gradient element, whether or not that pair is picked: a
// diverged batch never shows a finite loss. (Its cost is NaN too, so it also ranks hardest of its kind.)
// dist_sq is a sum of squares in squared_norm's fixed order, so identical pairs have identical costs.
// Mining: K is split between the kinds by split_picked_pairs (alternately the hardest remaining similar
// pair, then the hardest remaining dissimilar pair, starting with similar; when one kind runs out the other
// fills the rest); within a kind the pairs are ranked by cost, larger first, equal costs by lower index
// first (a total order, so the choice is deterministic and identical on CPU and GPU for equal costs).
#ifndef CAFFE_MINING_CONTRASTIVE_MINING_HPP_
#define CAFFE_MINING_CONTRASTIVE_MINING_HPP_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <string>

#include "caffe_mining/common/cuda_context.hpp"
#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/common/option_checks.hpp"
#include "caffe_mining/common/workspace.hpp"
#include "caffe_mining/losses/contrastive_pair.hpp"

namespace caffe_mining {

/// Options of the loss (contrastive_loss_param); the defaults are caffe.proto's.
struct ContrastiveOptions {
  double margin = 1.0;          ///< m, any finite value (as Caffe's ContrastiveLoss)
  bool legacy_version = false;  ///< dissimilar cost max(m - d^2, 0) instead of max(m - d, 0)^2
  int mining_ratio = 1;         ///< keep the hardest floor(N / mining_ratio) pairs (>= 1)

  /// Why these options cannot be used in Dtype, or "" when they can: mining_ratio >= 1 and a finite margin (any
  /// sign), as given and once rounded to Dtype. The layer CHECKs on it and the bindings raise ValueError with it.
  template <typename Dtype>
  std::string validate() const {
    if (mining_ratio < 1) return "mining_ratio must be >= 1. Got: " + std::to_string(mining_ratio);
    return option_finite_problem<Dtype>("margin", margin);
  }
};

/// The per-pair buffers of a forward pass, read again by the backward pass; caller-owned, host pointers for the CPU
/// functions and device pointers for the GPU functions. Each holds n values, diff n x dim.
template <typename Dtype>
struct ContrastivePairs {
  Dtype* diff;     ///< a - b
  Dtype* dist_sq;  ///< ||a - b||^2
  Dtype* cost;     ///< contrastive_cost of each pair
  int* picked;     ///< 1 for the mined pairs, else 0
};

/// K = floor(n / mining_ratio), the number of pairs the loss keeps. Requires mining_ratio >= 1.
CM_HOST_DEVICE int num_picked_pairs(int n, int mining_ratio) { return n / mining_ratio; }

/**
 * @brief Splits K picks between similar and dissimilar pairs.
 *
 * Alternating picks starting with a similar pair give ceil(K/2) similar and floor(K/2) dissimilar; a kind
 * that has fewer pairs than its share gives all it has and the other kind fills the rest.
 * Requires 0 <= num_picked <= num_similar + num_dissimilar.
 */
CM_HOST_DEVICE void split_picked_pairs(int num_similar, int num_dissimilar, int num_picked,
                                       int* k_similar, int* k_dissimilar) {
  int ks = (num_picked + 1) / 2;
  if (ks > num_similar) ks = num_similar;
  int kd = num_picked - ks;
  if (kd > num_dissimilar) kd = num_dissimilar;
  ks = num_picked - kd;
  if (ks > num_similar) ks = num_similar;
  *k_similar = ks;
  *k_dissimilar = kd;
}

/**
 * @brief Order-preserving integer key of a cost (larger cost, larger key), the hardness of a pair.
 *
 * Costs are >= 0; +0 and -0 both map to 0, and NaN maps to the key of +infinity (a NaN pair counts as
 * hardest, so a diverged batch shows a NaN loss instead of being mined away). For non-negative IEEE
 * numbers the bit pattern read as an unsigned integer is monotone in the value; the GPU radix selection
 * works on these bits.
 */
CM_HOST_DEVICE uint64_t hardness_key(float cost) {
  if (!(cost > 0.0f)) cost = (cost == 0.0f) ? 0.0f : INFINITY;
  uint32_t bits;
  memcpy(&bits, &cost, sizeof(bits));
  return bits;
}
CM_HOST_DEVICE uint64_t hardness_key(double cost) {
  if (!(cost > 0.0)) cost = (cost == 0.0) ? 0.0 : static_cast<double>(INFINITY);
  uint64_t bits;
  memcpy(&bits, &cost, sizeof(bits));
  return bits;
}

/// The mining order: pair i is harder than pair j (larger key first, then lower index first).
CM_HOST_DEVICE bool harder_pair(uint64_t key_i, int i, uint64_t key_j, int j) {
  return key_i > key_j || (key_i == key_j && i < j);
}

/**
 * @brief Steps of the GPU selection, here so that CPU tests can run them serially (see the .cu).
 *
 * Each pair has the composite key (hardness_key(cost), inverted index); larger is harder, and a lower index
 * has a larger inverted index, so the order is exactly harder_pair's and all composite keys are distinct.
 * Per kind, an MSD radix select finds the k-th largest composite key, one 8-bit digit per pass
 * (key_bytes = sizeof(Dtype) passes over the key, then index_bytes_for(n) over the inverted index):
 * histogram the pass's digit over the pairs that match_prefix, then choose_digit. Afterwards the pairs with
 * at_least_threshold are exactly the k hardest of the kind.
 */
namespace radix {

constexpr int kBins = 256;  // 8-bit digits

/// Selection state of one kind of pair.
struct KindSelection {
  int k;                  ///< pairs of this kind to pick
  int remaining;          ///< rank (1 = hardest) still sought among the pairs matching the prefix
  uint64_t key_prefix;    ///< hardness-key digits chosen so far
  uint64_t key_mask;      ///< which hardness-key bits are chosen
  uint32_t index_prefix;  ///< inverted-index digits chosen so far
  uint32_t index_mask;    ///< which inverted-index bits are chosen
};

CM_HOST_DEVICE void start(KindSelection* s, int k) {
  s->k = k;
  s->remaining = k;
  s->key_prefix = s->key_mask = 0;
  s->index_prefix = s->index_mask = 0;
}

/// Bytes of the inverted index: enough for every index 0..n-1.
CM_HOST_DEVICE int index_bytes_for(int n) {
  int bytes = 1;
  while (bytes < 4 && (uint64_t(1) << (8 * bytes)) < static_cast<uint64_t>(n)) ++bytes;
  return bytes;
}

CM_HOST_DEVICE uint32_t inverted_index(int i, int index_bytes) {
  const uint64_t max_index = (uint64_t(1) << (8 * index_bytes)) - 1;
  return static_cast<uint32_t>(max_index - static_cast<uint64_t>(i));
}

CM_HOST_DEVICE bool matches_prefix(const KindSelection& s, uint64_t key, uint32_t inv) {
  return (key & s.key_mask) == s.key_prefix && (inv & s.index_mask) == s.index_prefix;
}

/// Digit `pass` (0 = most significant) of the composite (key, inverted index).
CM_HOST_DEVICE int composite_digit(uint64_t key, uint32_t inv, int pass, int key_bytes,
                                   int index_bytes) {
  if (pass < key_bytes) return static_cast<int>((key >> (8 * (key_bytes - 1 - pass))) & 0xff);
  return static_cast<int>((inv >> (8 * (index_bytes - 1 - (pass - key_bytes)))) & 0xff);
}

/// Fixes digit `pass` of the kind's threshold from the histogram of that digit over the matching pairs.
/// Requires remaining <= number of matching pairs (true by induction from k <= pairs of the kind).
CM_HOST_DEVICE void choose_digit(KindSelection* s, const unsigned int* histogram, int pass,
                                 int key_bytes, int index_bytes) {
  if (s->remaining <= 0) return;
  int harder = 0, digit = 0;
  for (int d = kBins - 1; d >= 0; --d) {
    const int in_bin = static_cast<int>(histogram[d]);
    if (harder + in_bin >= s->remaining) {
      digit = d;
      break;
    }
    harder += in_bin;
  }
  s->remaining -= harder;
  if (pass < key_bytes) {
    const int shift = 8 * (key_bytes - 1 - pass);
    s->key_prefix |= static_cast<uint64_t>(digit) << shift;
    s->key_mask |= uint64_t(0xff) << shift;
  } else {
    const int shift = 8 * (index_bytes - 1 - (pass - key_bytes));
    s->index_prefix |= static_cast<uint32_t>(digit) << shift;
    s->index_mask |= uint32_t(0xff) << shift;
  }
}

/// After the last pass: whether a pair of this kind is among its k hardest.
CM_HOST_DEVICE bool at_least_threshold(const KindSelection& s, uint64_t key, uint32_t inv) {
  return s.k > 0 && (key > s.key_prefix || (key == s.key_prefix && inv >= s.index_prefix));
}

constexpr int kKinds = 2;  // kind 0 = dissimilar pairs, kind 1 = similar pairs

}  // namespace radix

/// The GPU path's workspace: the selection state, the forward's and the backward's non-finite flags. Its size does
/// not grow with n (the radix select needs only per-kind histograms).
struct ContrastiveGpuWorkspace {
  radix::KindSelection kind[radix::kKinds];
  int num_similar;
  int nonfinite;           ///< forward: 1 when some dist_sq is not finite (the loss is NaN)
  int backward_nonfinite;  ///< backward: the same test, made again on the dist_sq it is given
  unsigned int histogram[radix::kKinds * radix::kBins];
};

/// Bytes of workspace that contrastive_forward_* and contrastive_backward_* need for n pairs on `device`: on the CPU
/// n hardness keys and n pair indices (8-byte aligned), on the GPU a ContrastiveGpuWorkspace (256-byte aligned).
inline std::size_t contrastive_workspace_bytes(int n, const ContrastiveOptions& /*options*/, Device device) {
  if (device == Device::kGpu) return aligned_bytes(sizeof(ContrastiveGpuWorkspace));
  return static_cast<std::size_t>(n) * (sizeof(uint64_t) + sizeof(int));
}

/// Index of the first label that is neither 0 nor 1, or -1 if all are valid.
template <typename Dtype>
int find_invalid_label_cpu(const Dtype* sim, int n);

/**
 * @brief Forward pass on the CPU: distances, costs, mining, loss.
 *
 * @param a, b       n x dim inputs
 * @param sim        n labels (0/1)
 * @param options    margin, legacy_version, mining_ratio (K = num_picked_pairs(n, mining_ratio)); valid ones
 * @param pairs      out: diff, dist_sq, cost, picked (1 for the K mined pairs, 0 otherwise)
 * @param workspace  at least contrastive_workspace_bytes(n, options, Device::kCpu) bytes, 8-byte aligned
 * @param loss       out: E = sum of picked costs / (2K), 0 when K = 0
 *
 * Selection is O(n) (std::nth_element per kind in the harder_pair order).
 */
template <typename Dtype>
void contrastive_forward_cpu(int n, int dim, const Dtype* a, const Dtype* b, const Dtype* sim,
                             const ContrastiveOptions& options, const ContrastivePairs<Dtype>& pairs, void* workspace,
                             Dtype* loss);

/**
 * @brief Backward pass on the CPU: gradient of @f$ \lambda E @f$ w.r.t. a and b.
 *
 * Reads the forward's pairs (diff, dist_sq, picked). The scale is computed inside: alpha = loss_weight / K
 * (loss_weight = @f$\lambda@f$, the top diff). Rows of unpicked pairs get 0; all rows are zero when K = 0.
 * grad_b = -grad_a. Either grad pointer may be null (not computed). The CPU path uses no workspace (it may be null).
 *
 * @param grad_a  out, n x dim, may be null
 * @param grad_b  out, n x dim, may be null
 */
template <typename Dtype>
void contrastive_backward_cpu(int n, int dim, const Dtype* sim, const ContrastiveOptions& options,
                              const ContrastivePairs<Dtype>& pairs, Dtype loss_weight, void* workspace, Dtype* grad_a,
                              Dtype* grad_b);

// ---- CUDA twins: the context first (common/cuda_context.hpp; no cuBLAS handle needed), then the CPU     ----
// ---- functions' arguments as device pointers; asynchronous on the context's stream. Defined in the .cu, ----
// ---- available only in CUDA builds.                                                                     ----
// Launch errors are left to the caller (cudaGetLastError; Caffe's CUDA_POST_KERNEL_CHECK).
// Deterministic: no floating-point atomics, every sum in a fixed order, so a rerun gives the same bits.
// dist_sq is a warp's tree sum (with FMA), not cblas's dot: it can differ from the CPU's in the last bits, and so
// can a pick between pairs whose costs are equal on one path only; equal inputs give equal costs on each path.
// Non-finite dist_sq in any pair: the loss is NaN and the backward writes NaN into every gradient element (each
// pass keeps its flag in the workspace).

/// Writes to *first_invalid (device int) the index of the first label that is neither 0 nor 1, or n if
/// all are valid.
template <typename Dtype>
void find_invalid_label_gpu(const CudaContext& context, const Dtype* sim, int n, int* first_invalid);

/**
 * @brief Forward pass on the GPU, as contrastive_forward_cpu; the loss goes to the device scalar *loss, the
 * workspace is contrastive_workspace_bytes(n, options, Device::kGpu) bytes, 256-byte aligned.
 *
 * The whole selection runs on the device with no host synchronisation: a radix select over the
 * (hardness key, inverted index) bits finds, per kind, the K_kind-th hardest pair in O(n) per digit
 * pass; a pair is picked when it is at least as hard. Ties between equal costs resolve exactly as on
 * the CPU (by index); costs themselves can differ from the CPU's in the last bits (see above).
 */
template <typename Dtype>
void contrastive_forward_gpu(const CudaContext& context, int n, int dim, const Dtype* a, const Dtype* b,
                             const Dtype* sim, const ContrastiveOptions& options, const ContrastivePairs<Dtype>& pairs,
                             void* workspace, Dtype* loss);

/// Backward pass on the GPU, as contrastive_backward_cpu (loss_weight is a host scalar); the workspace (as the
/// forward's) holds its non-finite flag. The legacy gradient includes the (a - b) factor (Caffe's own legacy GPU
/// backward omits it).
template <typename Dtype>
void contrastive_backward_gpu(const CudaContext& context, int n, int dim, const Dtype* sim,
                              const ContrastiveOptions& options, const ContrastivePairs<Dtype>& pairs,
                              Dtype loss_weight, void* workspace, Dtype* grad_a, Dtype* grad_b);

}  // namespace caffe_mining

#endif  // CAFFE_MINING_CONTRASTIVE_MINING_HPP_
