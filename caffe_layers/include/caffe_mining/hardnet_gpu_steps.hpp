// Steps of the HardNet CUDA kernels (hardnet.cu): what each kernel decides per element and the order in which it
// adds, as host/device functions, so that CPU tests run them serially against the CPU core (tests/emulation/),
// as the radix select's steps in contrastive_mining.hpp are. Warp = 32 lanes; "lane-interleaved" means lane l takes
// columns l, l + 32, l + 64, ...
#ifndef CAFFE_MINING_HARDNET_GPU_STEPS_HPP_
#define CAFFE_MINING_HARDNET_GPU_STEPS_HPP_

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/common/launch.hpp"
#include "caffe_mining/common/math.hpp"
#include "caffe_mining/hardnet.hpp"
#include "caffe_mining/losses/hardnet_row_loss.hpp"

namespace caffe_mining {
namespace hardnet_gpu {

// ---- Non-finite policy (both paths): the forward gives loss NaN and every row empty, the backward NaN everywhere.

/// Whether the inputs leave the loss's domain: some squared norm is not finite, or the bound
/// x <= |a|^2 + |p|^2 + 2|a||p| <= 2 (max|a|^2 + max|p|^2) of a squared distance overflows.
/// max_sq_norm_* are the largest finite squared norms (0 when none).
template <typename Dtype>
CM_HOST_DEVICE bool inputs_nonfinite(bool any_nonfinite_norm, Dtype max_sq_norm_a, Dtype max_sq_norm_p) {
  return any_nonfinite_norm || !math::is_finite(Dtype(2) * (max_sq_norm_a + max_sq_norm_p));
}

// ---- Forward, MIN without anchor swap: one warp per row on the GEMM's dot products, squared scale.

/// Whether column j (squared distance x) is a valid negative of row i (hardnet_negative_valid on D = sqrt(x)).
template <typename Dtype>
CM_HOST_DEVICE bool squared_valid(const Dtype* labels, int i, int j, Dtype x, Dtype x_threshold) {
  return !(x < x_threshold) && hardnet_column_allowed(labels, i, j);
}

/// One lane's (then the warp's) share of a row: valid columns and their smallest x (infinity when none).
template <typename Dtype>
struct SquaredMinimum {
  Dtype x_min;
  int count;
};

template <typename Dtype>
CM_HOST_DEVICE SquaredMinimum<Dtype> squared_minimum_start() {
  SquaredMinimum<Dtype> s = {Dtype(INFINITY), 0};
  return s;
}

template <typename Dtype>
CM_HOST_DEVICE void squared_minimum_add(SquaredMinimum<Dtype>* s, bool valid, Dtype x) {
  if (!valid) return;
  ++s->count;
  if (x < s->x_min) s->x_min = x;
}

/// Merging two shares: the minimum and the count do not depend on the order.
template <typename Dtype>
CM_HOST_DEVICE void squared_minimum_merge(SquaredMinimum<Dtype>* s, const SquaredMinimum<Dtype>& other) {
  s->count += other.count;
  if (other.x_min < s->x_min) s->x_min = other.x_min;
}

// ---- Forward, every other reduction: one warp per row on the distance matrix, lane-interleaved columns; with
// ---- anchor swap, D_ji comes from a block-shared transposed tile (coalesced column reads).

/// Rows per block of that kernel (a warp each); its 32 x kTileRows swap tile holds D_ji for the block's rows i and
/// the 32 columns j of the current chunk.
constexpr int kTileRows = 8;

/// The tile cell that thread `thread` (0 .. 32 * kTileRows - 1) loads: tile[column][row] = D[j0 + column][i0 + row],
/// consecutive threads on consecutive i (coalesced); the warp of row i0 + w reads tile[lane][w].
struct TileCell {
  int column, row;
};
CM_HOST_DEVICE TileCell swap_tile_cell(int thread) {
  TileCell cell = {thread / kTileRows, thread % kTileRows};
  return cell;
}

/// One lane's (then the warp's) share of a row for any reduction.
template <typename Dtype>
struct RowShare {
  int count;
  int hardest;          // -1: none yet
  Dtype hardest_value;  // 0 when none
  Dtype loss_sum, dpos_sum;  // AVERAGE
};

template <typename Dtype>
CM_HOST_DEVICE RowShare<Dtype> row_share_start() {
  RowShare<Dtype> s = {0, -1, Dtype(0), Dtype(0), Dtype(0)};
  return s;
}

/// Adds candidate j (as mine_row on the CPU does).
template <typename Dtype>
CM_HOST_DEVICE void row_share_add(RowShare<Dtype>* s, const HardNetCandidate<Dtype>& cand, int j, Dtype pos,
                                  HardNetLossType type, Dtype margin, bool average) {
  if (!cand.valid) return;
  ++s->count;
  if (hardnet_harder(cand.value, j, s->hardest_value, s->hardest)) {
    s->hardest = j;
    s->hardest_value = cand.value;
  }
  if (average) {
    s->loss_sum += hardnet_row_loss(type, margin, pos, cand.value);
    s->dpos_sum += hardnet_row_loss_dpos(type, margin, pos, cand.value);
  }
}

/// Merges lane `other` into lane `s` in the warp's tree (offsets 16, 8, 4, 2, 1): count and hardest do not depend
/// on the order; the AVERAGE sums are deterministic but not summed in the CPU's order.
template <typename Dtype>
CM_HOST_DEVICE void row_share_merge(RowShare<Dtype>* s, const RowShare<Dtype>& other) {
  s->count += other.count;
  if (hardnet_harder(other.hardest_value, other.hardest, s->hardest_value, s->hardest)) {
    s->hardest = other.hardest;
    s->hardest_value = other.hardest_value;
  }
  s->loss_sum += other.loss_sum;
  s->dpos_sum += other.dpos_sum;
}

/// RANDOM: given the valid columns of a 32-column chunk (bit l = column chunk + l) and the rank still sought,
/// the lane of the chosen column, or -1 (then rank is lowered by the chunk's valid columns).
CM_HOST_DEVICE int rank_in_chunk(unsigned int valid_mask, int* rank) {
  int bits = 0;
  for (unsigned int m = valid_mask; m != 0u; m &= m - 1u) ++bits;
  if (*rank >= bits) {
    *rank -= bits;
    return -1;
  }
  unsigned int m = valid_mask;
  for (int skip = *rank; skip > 0; --skip) m &= m - 1u;  // drop the rank lowest set bits
  int lane = 0;
  while (((m >> lane) & 1u) == 0u) ++lane;
  return lane;
}

/// The row's outputs from its count, chosen column and candidate (both kernels; as hardnet_forward_cpu writes them).
template <typename Dtype>
CM_HOST_DEVICE void write_row(const HardNetMining<Dtype>& mining, int i, Dtype pos, int count, int chosen,
                              const HardNetCandidate<Dtype>& cand, Dtype loss_sum, Dtype dpos_sum,
                              const HardNetOptions& options) {
  const HardNetRowTerms<Dtype> terms =
      hardnet_row_terms(options.loss_type, static_cast<Dtype>(options.margin),
                        options.batch_reduce == HardNetBatchReduce::kAverage, count, pos, cand.value, loss_sum,
                        dpos_sum);
  mining.pos_dist[i] = pos;
  mining.neg_count[i] = count;
  mining.neg_index[i] = chosen;
  mining.neg_swapped[i] = chosen >= 0 && cand.swapped ? 1 : 0;
  mining.neg_dist[i] = chosen >= 0 ? cand.value : Dtype(0);
  mining.row_loss[i] = terms.loss;
  mining.dloss_dpos[i] = terms.dpos;
  mining.dloss_dneg[i] = terms.dneg;
}

/// Non-finite inputs: the row is empty and pos_dist is NaN, the flag the backward reads (with finite inputs whose
/// squared distances do not overflow every pos_dist is finite, as x >= eps > 0).
template <typename Dtype>
CM_HOST_DEVICE void write_nonfinite_row(const HardNetMining<Dtype>& mining, int i) {
  const HardNetCandidate<Dtype> none = {Dtype(0), false, false};
  HardNetOptions options;
  write_row(mining, i, Dtype(NAN), 0, -1, none, Dtype(0), Dtype(0), options);
}

// ---- Backward, MIN and RANDOM, without atomics: one warp per output row r, which sums its terms in the CPU's order
// ---- (rows i increasing; row r's own terms, positive first, at i = r). The rows whose chosen negative lands on r
// ---- are found by scanning the scatter keys 32 at a time (lane order = increasing i).

/// scale = loss_weight / R, as the CPU computes it.
template <typename Dtype>
CM_HOST_DEVICE Dtype gradient_scale(Dtype loss_weight, int valid_rows) {
  return valid_rows > 0 ? loss_weight / Dtype(valid_rows) : Dtype(0);
}

/// Coefficient of row i's positive-pair term (0: the term is skipped, as on the CPU).
template <typename Dtype>
CM_HOST_DEVICE Dtype positive_coeff(const HardNetMining<Dtype>& mining, int i, Dtype scale) {
  if (mining.neg_count[i] == 0) return Dtype(0);
  return math::safe_div(scale * mining.dloss_dpos[i], mining.pos_dist[i]);
}

/// Coefficient of row i's negative term (0: skipped).
template <typename Dtype>
CM_HOST_DEVICE Dtype negative_coeff(const HardNetMining<Dtype>& mining, int i, Dtype scale) {
  if (mining.neg_count[i] == 0) return Dtype(0);
  return math::safe_div(scale * mining.dloss_dneg[i], mining.neg_dist[i]);
}

/// Where row i's negative term lands: positive row j (key j, value D_ij = d(a_i, p_j)), anchor row j (key n + j,
/// swapped, value D_ji = d(a_j, p_i)), or nowhere (-1: empty row or zero coefficient).
template <typename Dtype>
CM_HOST_DEVICE int scatter_key(const HardNetMining<Dtype>& mining, int n, int i, Dtype scale) {
  if (negative_coeff(mining, i, scale) == Dtype(0)) return -1;
  const int j = mining.neg_index[i];
  return mining.neg_swapped[i] ? n + j : j;
}

/// coeff * (a - p), each operation rounded (the device would otherwise fuse the product into the following sum).
CM_HOST_DEVICE float gradient_step(float coeff, float a, float p) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(coeff, __fsub_rn(a, p));
#else
  return coeff * (a - p);
#endif
}
CM_HOST_DEVICE double gradient_step(double coeff, double a, double p) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(coeff, __dsub_rn(a, p));
#else
  return coeff * (a - p);
#endif
}

/// Row r's own terms on element k of its anchor and positive gradients (acc_a, acc_p), in the CPU's order: the
/// positive pair, then its negative when that lands on row r (anchor side unswapped, positive side swapped).
template <typename Dtype>
CM_HOST_DEVICE void add_own_terms(const HardNetMining<Dtype>& mining, int dim, const Dtype* anchor,
                                  const Dtype* positive, int r, int k, Dtype scale, Dtype* acc_a, Dtype* acc_p) {
  const std::size_t row_r = static_cast<std::size_t>(r) * dim;
  const Dtype pos_coeff = positive_coeff(mining, r, scale);
  if (pos_coeff != Dtype(0)) {
    const Dtype step = gradient_step(pos_coeff, anchor[row_r + k], positive[row_r + k]);
    *acc_a += step;
    *acc_p -= step;
  }
  const Dtype neg_coeff = negative_coeff(mining, r, scale);
  if (neg_coeff == Dtype(0)) return;
  const std::size_t row_j = static_cast<std::size_t>(mining.neg_index[r]) * dim;
  if (mining.neg_swapped[r]) {  // D_jr = d(a_j, p_r): p_r's part
    *acc_p -= gradient_step(neg_coeff, anchor[row_j + k], positive[row_r + k]);
  } else {  // D_rj = d(a_r, p_j): a_r's part
    *acc_a += gradient_step(neg_coeff, anchor[row_r + k], positive[row_j + k]);
  }
}

/// Row i's negative term on element k of the output row r it lands on (key = scatter_key(i), r = key mod n).
template <typename Dtype>
CM_HOST_DEVICE void add_incoming_term(const HardNetMining<Dtype>& mining, int n, int dim, const Dtype* anchor,
                                      const Dtype* positive, int i, int key, int k, Dtype scale, Dtype* acc_a,
                                      Dtype* acc_p) {
  const Dtype neg_coeff = negative_coeff(mining, i, scale);
  const std::size_t row_i = static_cast<std::size_t>(i) * dim;
  if (key >= n) {  // anchor row r = key - n, swapped: D_ri = d(a_r, p_i)
    const std::size_t row_r = static_cast<std::size_t>(key - n) * dim;
    *acc_a += gradient_step(neg_coeff, anchor[row_r + k], positive[row_i + k]);
  } else {  // positive row r = key: D_ir = d(a_i, p_r)
    const std::size_t row_r = static_cast<std::size_t>(key) * dim;
    *acc_p -= gradient_step(neg_coeff, anchor[row_i + k], positive[row_r + k]);
  }
}

}  // namespace hardnet_gpu
}  // namespace caffe_mining

#endif  // CAFFE_MINING_HARDNET_GPU_STEPS_HPP_
