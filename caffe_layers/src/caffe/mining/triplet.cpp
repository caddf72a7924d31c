// CPU implementation of the TripletLoss core (see caffe_mining/triplet.hpp for the math and the contracts).
#include "caffe_mining/triplet.hpp"
#include "caffe_mining/distances/gemm_distances.hpp"
#include "caffe_mining/distances/squared_norm.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace caffe_mining {

namespace {

// Row-major upper triangle of C = X X^T (j >= i); the lower triangle is left as it was.
void syrk_upper(int n, int dim, const float* x, float* c) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, dim, 1.0f, x, dim, 0.0f, c, n);
}
void syrk_upper(int n, int dim, const double* x, double* c) {
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, dim, 1.0, x, dim, 0.0, c, n);
}

// Row-major C = alpha * A * B + beta * C (A: m x k, B: k x n).
void gemm(int m, int n, int k, float alpha, const float* a, const float* b, float beta, float* c) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, alpha, a, k, b, n, beta, c, n);
}
void gemm(int m, int n, int k, double alpha, const double* a, const double* b, double beta, double* c) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, alpha, a, k, b, n, beta, c, n);
}

// Whether some squared distance could be NaN or overflow: a norm that is NaN or inf, or 4 max |x_i|^2 = inf, which
// bounds every |x_i|^2 + |x_j|^2 - 2 x_i.x_j <= (|x_i| + |x_j|)^2.
template <typename Dtype>
bool distances_overflow(int n, const Dtype* sq_norm) {
  const Dtype kMax = std::numeric_limits<Dtype>::max();
  Dtype largest = Dtype(0);
  for (int i = 0; i < n; ++i) {
    if (!(sq_norm[i] <= kMax)) return true;  // NaN or inf
    largest = std::max(largest, sq_norm[i]);
  }
  return !(Dtype(4) * largest <= kMax);
}

// Side of the square tiles of the n x n passes (a tile's transposed copy: 32 x 32 values, in L1).
constexpr int kTile = 32;

// dist holds x_i.x_j in its upper triangle (j >= i); writes D_ij into (i, j) and (j, i) from that one value. Tile by
// tile: a tile's distances row by row, then its mirror through a small transposed copy (writing the mirror straight
// from the rows strides by n, and n = 1024 floats puts every row of a tile in one cache set).
template <typename Dtype>
void distances_from_upper_dots(int n, const Dtype* sq_norm, Dtype eps, bool squared, Dtype* dist) {
  const std::size_t nn = static_cast<std::size_t>(n);
  Dtype tile[kTile][kTile];
  for (int i0 = 0; i0 < n; i0 += kTile) {
    const int i1 = std::min(n, i0 + kTile);
    for (int j0 = i0; j0 < n; j0 += kTile) {
      const int j1 = std::min(n, j0 + kTile);
      for (int i = i0; i < i1; ++i) {
        Dtype* row = dist + i * nn;
        const Dtype sq_i = sq_norm[i];
        const int start = std::max(i, j0);
        if (squared) {
          for (int j = start; j < j1; ++j) row[j] = triplet_distance(sq_i, sq_norm[j], row[j], eps, squared);
        } else {  // distance_from_dot's values with a vectorized root (distances/gemm_distances.hpp)
          dots_to_distances(j1 - start, sq_i, sq_norm + start, eps, row + start);
        }
        for (int j = start; j < j1; ++j) tile[j - j0][i - i0] = row[j];
      }
      for (int j = j0; j < j1; ++j) {
        Dtype* row = dist + j * nn;
        const int end = std::min(i1, j);  // (j, i) for i < j: the diagonal is written above
        for (int i = i0; i < end; ++i) row[i] = tile[j - j0][i - i0];
      }
    }
  }
}

// Lane scans of one anchor's row: the lowest index j of the smallest (largest) D_aj among a set of rows, in the
// lanes of a GCC/Clang vector (kLaneBytes: 16, one SSE2/NEON register, the baseline the core is built for). Each
// lane keeps its first strictly better value; the lanes' results are merged by value, then lowest index: the scan's answer exactly.
// Distances are finite here (non-finite input returns before mining).
constexpr int kLaneBytes = 16;
template <typename Dtype>
struct LaneVector;
template <>
struct LaneVector<float> {
  typedef float type __attribute__((vector_size(kLaneBytes)));
};
template <>
struct LaneVector<double> {
  typedef double type __attribute__((vector_size(kLaneBytes)));
};

// The lanes' picks merged: the best value, then the lowest index; -1 (and *value untouched) when no lane has one.
template <bool kLargest, typename Vec, typename Dtype>
int merge_lanes(const Vec& best, const Vec& best_index, Dtype* value) {
  constexpr int kWidth = sizeof(Vec) / sizeof(Dtype);
  int pick = -1;
  for (int k = 0; k < kWidth; ++k) {
    const int lane_index = static_cast<int>(best_index[k]);
    if (lane_index < 0) continue;
    const bool better = pick < 0 || (kLargest ? best[k] > *value : best[k] < *value);
    if (better || (best[k] == *value && lane_index < pick)) {
      *value = best[k];
      pick = lane_index;
    }
  }
  return pick;
}

// Which rows a scan takes: negatives farther than a threshold (closest: SEMI_HARD's and BATCH_HARD's negative),
// every negative (farthest: SEMI_HARD's fallback), the positives (farthest: BATCH_HARD's positive).
enum class RowSet { kNegativesBeyond, kNegatives, kPositives };

// The pick of a scan: the lowest index of the best distance, -1 when the set is empty.
template <RowSet kSet, typename Dtype>
int scan_row(const Dtype* dist_row, const Dtype* labels, int n, int anchor, Dtype threshold) {
  typedef typename LaneVector<Dtype>::type Vec;
  constexpr int kWidth = kLaneBytes / sizeof(Dtype);
  constexpr bool kLargest = kSet != RowSet::kNegativesBeyond;
  const Dtype kNone = kLargest ? -std::numeric_limits<Dtype>::infinity() : std::numeric_limits<Dtype>::infinity();
  const Dtype label = labels[anchor];
  // Indices as Dtype: exact below 2^24 (float), beyond triplet_max_rows().
  Vec best = kNone - Vec{}, best_index = Dtype(-1) - Vec{}, index = Vec{};
  for (int k = 0; k < kWidth; ++k) index[k] = Dtype(k);
  int j = 0;
  for (; j + kWidth <= n; j += kWidth) {
    Vec d, y;
    std::memcpy(&d, dist_row + j, sizeof(Vec));
    std::memcpy(&y, labels + j, sizeof(Vec));
    Vec candidate;
    if (kSet == RowSet::kNegativesBeyond) {
      candidate = ((y != label) & (d > threshold)) ? d : kNone - Vec{};
    } else if (kSet == RowSet::kNegatives) {
      candidate = y != label ? d : kNone - Vec{};
    } else {
      candidate = ((y == label) & (index != Dtype(anchor))) ? d : kNone - Vec{};
    }
    const auto better = kLargest ? candidate > best : candidate < best;
    best = better ? candidate : best;
    best_index = better ? index : best_index;
    index += Dtype(kWidth);
  }
  Dtype value = kNone;
  int pick = merge_lanes<kLargest>(best, best_index, &value);
  for (; j < n; ++j) {  // the tail: higher indices than every lane's, so only a strictly better value wins
    const Dtype d = dist_row[j];
    bool in_set;
    if (kSet == RowSet::kNegativesBeyond) {
      in_set = is_negative_of(labels, anchor, j) && d > threshold;
    } else if (kSet == RowSet::kNegatives) {
      in_set = is_negative_of(labels, anchor, j);
    } else {
      in_set = is_positive_of(labels, anchor, j);
    }
    if (in_set && (pick < 0 || (kLargest ? d > value : d < value))) {
      value = d;
      pick = j;
    }
  }
  return pick;
}

// Positives whose semi-hard negatives one pass over the row finds.
constexpr int kSemiHardGroup = 4;

// SEMI_HARD's negatives of up to kSemiHardGroup positive pairs of `anchor` (distances d_ap[g]) in one lane scan of
// the row: picks[g] = the closest negative with d_an > d_ap[g], else the farthest negative, each the lowest index
// among equal distances (semi_hard_negative's definition); -1 when the anchor has no negative.
template <typename Dtype>
void semi_hard_group_picks(const Dtype* dist_row, const Dtype* labels, int n, int anchor, const Dtype* d_ap,
                           int count, int* picks) {
  typedef typename LaneVector<Dtype>::type Vec;
  constexpr int kWidth = kLaneBytes / sizeof(Dtype);
  const Dtype kInf = std::numeric_limits<Dtype>::infinity();
  const Dtype label = labels[anchor];
  Dtype threshold[kSemiHardGroup];
  for (int g = 0; g < kSemiHardGroup; ++g) threshold[g] = g < count ? d_ap[g] : kInf;  // +inf: nothing beyond
  Vec beyond[kSemiHardGroup], beyond_index[kSemiHardGroup];
  for (int g = 0; g < kSemiHardGroup; ++g) {
    beyond[g] = kInf - Vec{};
    beyond_index[g] = Dtype(-1) - Vec{};
  }
  Vec farthest = -kInf - Vec{}, farthest_index = Dtype(-1) - Vec{}, index = Vec{};
  for (int k = 0; k < kWidth; ++k) index[k] = Dtype(k);
  int j = 0;
  for (; j + kWidth <= n; j += kWidth) {
    Vec d, y;
    std::memcpy(&d, dist_row + j, sizeof(Vec));
    std::memcpy(&y, labels + j, sizeof(Vec));
    const auto negative = y != label;
    const Vec any = negative ? d : -kInf - Vec{};
    const auto farther = any > farthest;
    farthest = farther ? any : farthest;
    farthest_index = farther ? index : farthest_index;
    for (int g = 0; g < kSemiHardGroup; ++g) {
      const Vec candidate = (negative & (d > threshold[g])) ? d : kInf - Vec{};
      const auto closer = candidate < beyond[g];
      beyond[g] = closer ? candidate : beyond[g];
      beyond_index[g] = closer ? index : beyond_index[g];
    }
    index += Dtype(kWidth);
  }
  Dtype farthest_value = -kInf, beyond_value[kSemiHardGroup];
  int farthest_pick = merge_lanes<true>(farthest, farthest_index, &farthest_value), beyond_pick[kSemiHardGroup];
  for (int g = 0; g < kSemiHardGroup; ++g) {
    beyond_value[g] = kInf;
    beyond_pick[g] = merge_lanes<false>(beyond[g], beyond_index[g], &beyond_value[g]);
  }
  for (; j < n; ++j) {  // the tail: higher indices than every lane's, so only a strictly better value wins
    if (!is_negative_of(labels, anchor, j)) continue;
    const Dtype d = dist_row[j];
    if (farthest_pick < 0 || d > farthest_value) {
      farthest_value = d;
      farthest_pick = j;
    }
    for (int g = 0; g < count; ++g) {
      if (d > threshold[g] && (beyond_pick[g] < 0 || d < beyond_value[g])) {
        beyond_value[g] = d;
        beyond_pick[g] = j;
      }
    }
  }
  for (int g = 0; g < count; ++g) picks[g] = beyond_pick[g] >= 0 ? beyond_pick[g] : farthest_pick;
}

// SEMI_HARD's anchor step (triplet_anchor_step's, the same decisions and the same sums in the same order), with
// each pair's negative found by lane scans of the row (semi_hard_negative's definition: the closest negative with
// d_an > d_ap, ties to the lowest index; else the farthest, ties to the lowest index).
template <typename Dtype>
void semi_hard_anchor_cpu(const TripletRowLoss<Dtype>& term, int n, int a, const Dtype* labels,
                          const TripletMining<Dtype>& mining) {
  const std::size_t row_start = static_cast<std::size_t>(a) * n;
  const Dtype* dist_row = mining.dist + row_start;
  Dtype* weight_row = mining.weight + row_start;
  int* pair_row = mining.pair_negative + row_start;
  std::fill(weight_row, weight_row + n, Dtype(0));
  std::fill(pair_row, pair_row + n, -1);
  Dtype loss = Dtype(0);
  long long terms = 0;
  int p = 0;
  while (true) {
    int group[kSemiHardGroup], picks[kSemiHardGroup] = {-1, -1, -1, -1};
    Dtype d_ap[kSemiHardGroup];
    int size = 0;
    for (; p < n && size < kSemiHardGroup; ++p) {
      if (is_positive_of(labels, a, p)) {
        d_ap[size] = dist_row[p];
        group[size++] = p;
      }
    }
    if (size == 0) break;
    semi_hard_group_picks(dist_row, labels, n, a, d_ap, size, picks);
    if (picks[0] < 0) break;  // a has no negative: no term
    for (int g = 0; g < size; ++g) {
      const int k = picks[g];
      const TripletTerm<Dtype> t = term(d_ap[g], dist_row[k]);
      pair_row[group[g]] = k;
      weight_row[group[g]] += t.slope;
      weight_row[k] -= t.slope;
      loss += t.loss;
      ++terms;
    }
  }
  mining.row_loss[a] = loss;
  mining.row_terms[a] = terms;
}

// Positives a BATCH_ALL pass carries at once: their running sums are independent chains the CPU overlaps.
constexpr int kBatchAllGroup = 4;

// BATCH_ALL's anchor step (batch_all_row's sums in the same order: each positive's partial sums in increasing n, the
// positives' sums added in increasing p, each weight_row[n] decremented in increasing p), with up to
// kBatchAllGroup positives walking the negatives together.
template <typename Dtype>
void batch_all_anchor_cpu(const TripletRowLoss<Dtype>& term, int n, int a, const Dtype* labels,
                          const TripletMining<Dtype>& mining) {
  const std::size_t row_start = static_cast<std::size_t>(a) * n;
  const Dtype* dist_row = mining.dist + row_start;
  Dtype* weight_row = mining.weight + row_start;
  std::fill(weight_row, weight_row + n, Dtype(0));
  Dtype row_loss = Dtype(0);
  long long active = 0;
  int p = 0;
  while (true) {
    int group[kBatchAllGroup];
    int size = 0;
    for (; p < n && size < kBatchAllGroup; ++p) {
      if (is_positive_of(labels, a, p)) group[size++] = p;
    }
    if (size == 0) break;
    Dtype d_ap[kBatchAllGroup], loss[kBatchAllGroup][kBatchAllPartials], slope[kBatchAllGroup][kBatchAllPartials];
    long long open[kBatchAllGroup];
    for (int g = 0; g < size; ++g) {
      d_ap[g] = dist_row[group[g]];
      for (int q = 0; q < kBatchAllPartials; ++q) loss[g][q] = slope[g][q] = Dtype(0);
      open[g] = 0;
    }
    for (int k = 0; k < n; ++k) {
      if (!is_negative_of(labels, a, k)) continue;
      const Dtype d_an = dist_row[k];
      const int q = k % kBatchAllPartials;
      Dtype weight = weight_row[k];
      for (int g = 0; g < size; ++g) {
        const TripletTerm<Dtype> t = term(d_ap[g], d_an);
        loss[g][q] += t.loss;
        slope[g][q] += t.slope;
        weight -= t.slope;
        open[g] += t.loss > Dtype(0);
      }
      weight_row[k] = weight;
    }
    for (int g = 0; g < size; ++g) {
      row_loss += batch_all_partials_sum(loss[g]);
      weight_row[group[g]] += batch_all_partials_sum(slope[g]);
      active += open[g];
    }
  }
  mining.row_loss[a] = row_loss;
  mining.row_terms[a] = active;
}

// BATCH_HARD's anchor step (triplet_anchor_step's outputs to the bit) with batch_hard_pick's decisions by lane
// scans: the farthest positive and the closest negative, each the lowest index among equal distances.
template <typename Dtype>
void batch_hard_anchor_cpu(const TripletRowLoss<Dtype>& term, int n, int a, const Dtype* labels,
                           const TripletMining<Dtype>& mining) {
  const std::size_t row_start = static_cast<std::size_t>(a) * n;
  const Dtype* dist_row = mining.dist + row_start;
  Dtype* weight_row = mining.weight + row_start;
  std::fill(weight_row, weight_row + n, Dtype(0));
  int positive = scan_row<RowSet::kPositives>(dist_row, labels, n, a, Dtype(0));
  // The closest negative: the closest one farther than -inf.
  int negative = scan_row<RowSet::kNegativesBeyond>(dist_row, labels, n, a, -std::numeric_limits<Dtype>::infinity());
  mining.row_loss[a] = Dtype(0);
  mining.row_terms[a] = 0;
  if (positive >= 0 && negative >= 0) {
    const TripletTerm<Dtype> t = term(dist_row[positive], dist_row[negative]);
    weight_row[positive] = t.slope;
    weight_row[negative] = -t.slope;
    mining.row_loss[a] = t.loss;
    mining.row_terms[a] = 1;
  } else {
    positive = negative = -1;
  }
  mining.positive[a] = positive;
  mining.negative[a] = negative;
}

// BATCH_ALL's hinge step: batch_all_anchor_cpu's outputs to the bit, positive after positive, its negatives in
// the lanes of a vector of kBatchAllPartials: lane q holds partial q (n mod kBatchAllPartials) of batch_all_row,
// which adds max(m + d_ap - d_an, 0) in increasing n (rows that are no negative add +0, which changes no sum that
// starts at +0). The slopes are 0 or 1, so the weights are integer counts, exact in any order.
template <typename Dtype>
void batch_all_hinge_anchor_cpu(Dtype margin, int n, int a, const Dtype* labels,
                                const TripletMining<Dtype>& mining) {
  typedef Dtype Vec __attribute__((vector_size(kBatchAllPartials * sizeof(Dtype))));
  const std::size_t row_start = static_cast<std::size_t>(a) * n;
  const Dtype* dist_row = mining.dist + row_start;
  Dtype* weight_row = mining.weight + row_start;
  std::fill(weight_row, weight_row + n, Dtype(0));
  const Dtype label = labels[a];
  Dtype row_loss = Dtype(0);
  long long active = 0;
  for (int p = 0; p < n; ++p) {
    if (!is_positive_of(labels, a, p)) continue;
    const Dtype threshold = margin + dist_row[p];
    Vec loss = Vec{}, slope = Vec{};
    int k = 0;
    for (; k + kBatchAllPartials <= n; k += kBatchAllPartials) {
      Vec d, y, w;
      std::memcpy(&d, dist_row + k, sizeof(Vec));
      std::memcpy(&y, labels + k, sizeof(Vec));
      std::memcpy(&w, weight_row + k, sizeof(Vec));
      const Vec hinge = threshold - d;
      const auto open = (hinge > Dtype(0)) & (y != label);
      loss += open ? hinge : Vec{};
      const Vec step = open ? Dtype(1) - Vec{} : Vec{};
      slope += step;
      w -= step;
      std::memcpy(weight_row + k, &w, sizeof(Vec));
    }
    Dtype loss_part[kBatchAllPartials], slope_part[kBatchAllPartials];
    const Vec loss_sums = loss, slope_sums = slope;  // copies: loss and slope stay in registers in the loop
    std::memcpy(loss_part, &loss_sums, sizeof(Vec));
    std::memcpy(slope_part, &slope_sums, sizeof(Vec));
    for (; k < n; ++k) {  // the tail: partial k mod kBatchAllPartials, as in batch_all_row
      if (!is_negative_of(labels, a, k)) continue;
      const Dtype hinge = threshold - dist_row[k];
      if (!(hinge > Dtype(0))) continue;
      loss_part[k % kBatchAllPartials] += hinge;
      slope_part[k % kBatchAllPartials] += Dtype(1);
      weight_row[k] -= Dtype(1);
    }
    const Dtype slope_sum = batch_all_partials_sum(slope_part);
    row_loss += batch_all_partials_sum(loss_part);
    weight_row[p] += slope_sum;
    active += static_cast<long long>(slope_sum);
  }
  mining.row_loss[a] = row_loss;
  mining.row_terms[a] = active;
}

// triplet_anchor_step by the CPU's lane scans (same outputs to the bit; the GPU runs
// triplet_anchor_step, and tests/emulation/triplet_gpu_emulation.cpp compares the two).
template <typename Dtype>
void anchor_step_cpu(TripletMiner miner, const TripletRowLoss<Dtype>& term, int n, int a, const Dtype* labels,
                     const TripletMining<Dtype>& mining) {
  if (miner == TripletMiner::kSemiHard) {
    semi_hard_anchor_cpu(term, n, a, labels, mining);
  } else if (miner == TripletMiner::kBatchAll && !term.soft) {
    batch_all_hinge_anchor_cpu(term.margin, n, a, labels, mining);
  } else if (miner == TripletMiner::kBatchAll) {
    batch_all_anchor_cpu(term, n, a, labels, mining);
  } else {
    batch_hard_anchor_cpu(term, n, a, labels, mining);
  }
}

// S = V + V^T entry by entry (triplet_gradient_weight's value to the bit) into s, and its row sums in increasing j;
// tile by tile, W's transpose read through a small copy (see distances_from_upper_dots). For a dense S (BATCH_ALL).
template <typename Dtype>
void gradient_weights(int n, const Dtype* dist, const Dtype* weight, Dtype scale, bool squared, Dtype* s,
                             Dtype* row_sum) {
  const std::size_t nn = static_cast<std::size_t>(n);
  Dtype transposed[kTile][kTile], entries[kTile][kTile];  // entries[j][i]: S_ij of the tile
  std::fill(row_sum, row_sum + n, Dtype(0));
  for (int i0 = 0; i0 < n; i0 += kTile) {
    const int i1 = std::min(n, i0 + kTile);
    for (int j0 = 0; j0 < n; j0 += kTile) {
      const int j1 = std::min(n, j0 + kTile);
      for (int j = j0; j < j1; ++j) {
        for (int i = i0; i < i1; ++i) transposed[i - i0][j - j0] = weight[j * nn + i];
      }
      // Entries a row of the tile at a time (vectorized: the factor where the weight sum is non-zero), then the row
      // sums down the tile's columns: each row's sum still adds its entries in increasing j (adding a zero, as the
      // step does for every zero entry, changes no sum), the tile's rows side by side.
      for (int i = i0; i < i1; ++i) {
        const Dtype* w_row = weight + i * nn;
        const Dtype* w_col = transposed[i - i0] - j0;
        const Dtype* d_row = dist + i * nn;
        Dtype* s_row = s + i * nn;
        Dtype* entry_column = &entries[0][i - i0] - j0 * kTile;
        // (scale w) times a finite factor > 0: a zero weight sum keeps scale w's signed zero without the factor.
        // Every operation unconditional and the results selected, in the lanes of a vector; a selected value is
        // triplet_gradient_weight's: safe_div(1, d), or 2 when squared.
        typedef typename LaneVector<Dtype>::type Vec;
        constexpr int kWidth = kLaneBytes / sizeof(Dtype);
        int j = j0;
        for (; j + kWidth <= j1; j += kWidth) {
          Vec w, w_t, d;
          std::memcpy(&w, w_row + j, sizeof(Vec));
          std::memcpy(&w_t, w_col + j, sizeof(Vec));
          std::memcpy(&d, d_row + j, sizeof(Vec));
          const Vec v = scale * (w + w_t);
          const Vec inverse = Dtype(1) / d;
          const Vec factor = squared ? Dtype(2) - Vec{} : ((d != Dtype(0)) ? inverse : Vec{});
          const Vec product = v * factor;
          const Vec value = (v != Dtype(0)) ? product : v;
          std::memcpy(s_row + j, &value, sizeof(Vec));
        }
        for (; j < j1; ++j) {
          const Dtype v = scale * (w_row[j] + w_col[j]);
          s_row[j] = v != Dtype(0) ? v * triplet_distance_factor(d_row[j], squared) : v;
        }
        if (i >= j0 && i < j1) s_row[i] = Dtype(0);
        for (int j = j0; j < j1; ++j) entry_column[j * kTile] = s_row[j];
      }
      for (int j = j0; j < j1; ++j) {
        const Dtype* entry_row = entries[j - j0];
        for (int i = i0; i < i1; ++i) row_sum[i] += entry_row[i - i0];
      }
    }
  }
}

// S = V + V^T for a sparse miner (BATCH_HARD, SEMI_HARD), triplet_gradient_weight's values to the bit: the
// anchor steps write W only at each anchor's picks (row a: its positive(s) and their negatives) and leave +0
// elsewhere, so S is scale * (+0) (the diagonal +0) except at the picks and their mirrors, recomputed one by one
// (a pick's weight may be -0: BATCH_HARD's -slope of a closed hinge).
template <typename Dtype>
void mined_gradient_weights(TripletMiner miner, int n, const TripletMining<Dtype>& mining, Dtype scale,
                            bool squared, Dtype* s) {
  const std::size_t nn = static_cast<std::size_t>(n);
  std::fill(s, s + nn * nn, scale * Dtype(0));
  for (int i = 0; i < n; ++i) s[i * nn + i] = Dtype(0);
  auto pick = [&](int a, int j) {
    const Dtype v = triplet_gradient_weight(mining.dist, mining.weight, n, a, j, scale, squared);
    s[a * nn + j] = v;
    s[j * nn + a] = v;  // S is symmetric to the bit: the same sum of the same two weights times the same factor
  };
  for (int a = 0; a < n; ++a) {
    if (miner == TripletMiner::kBatchHard) {
      if (mining.positive[a] < 0) continue;
      pick(a, mining.positive[a]);
      pick(a, mining.negative[a]);
    } else {
      const int* pair_row = mining.pair_negative + a * nn;
      for (int p = 0; p < n; ++p) {
        if (pair_row[p] < 0) continue;
        pick(a, p);
        pick(a, pair_row[p]);
      }
    }
  }
}

// row_sum = S 1 (in increasing j), and dE/dX = diag(S 1) X - S X as sum_j S_ij (x_i - x_j) over S's non-zero
// entries (the differences cancel exactly for coincident rows, whose S_ij = w / sqrt(eps) is large). Adding a
// zero never changes a sum that starts at +0 (x + -0 = x, +0 + -0 = +0): the row sums of the non-zero entries
// alone are the full row sums to the bit.
template <typename Dtype>
void sparse_gradient(int n, int dim, const Dtype* x, const Dtype* s, Dtype* row_sum, Dtype* grad) {
  const std::size_t nn = static_cast<std::size_t>(n);
  for (int i = 0; i < n; ++i) {
    Dtype* out = grad + i * static_cast<std::size_t>(dim);
    const Dtype* xi = x + i * static_cast<std::size_t>(dim);
    std::fill(out, out + dim, Dtype(0));
    const Dtype* s_row = s + i * nn;
    Dtype sum = Dtype(0);
    for (int j = 0; j < n; ++j) {
      const Dtype w = s_row[j];
      if (w == Dtype(0)) continue;
      sum += w;
      const Dtype* xj = x + j * static_cast<std::size_t>(dim);
      for (int k = 0; k < dim; ++k) out[k] += w * (xi[k] - xj[k]);
    }
    row_sum[i] = sum;
  }
}

}  // namespace

template <typename Dtype>
void triplet_forward_cpu(int n, int dim, const Dtype* embedding, const Dtype* labels, const TripletOptions& options,
                         const TripletMining<Dtype>& mining, void* workspace, Dtype* loss) {
  Dtype* scratch = static_cast<Dtype*>(workspace);
  const std::size_t nn = static_cast<std::size_t>(n);
  Dtype* sq_norm = scratch;
  for (int i = 0; i < n; ++i) sq_norm[i] = squared_norm(dim, embedding + i * static_cast<std::size_t>(dim));
  if (distances_overflow(n, sq_norm)) {
    std::fill(mining.dist, mining.dist + nn * nn, std::numeric_limits<Dtype>::quiet_NaN());
    std::fill(mining.weight, mining.weight + nn * nn, Dtype(0));
    if (options.mining == TripletMiner::kBatchHard) {
      std::fill(mining.positive, mining.positive + nn, -1);
      std::fill(mining.negative, mining.negative + nn, -1);
    } else if (options.mining == TripletMiner::kSemiHard) {
      std::fill(mining.pair_negative, mining.pair_negative + nn * nn, -1);
    }
    std::fill(mining.row_loss, mining.row_loss + nn, Dtype(0));
    std::fill(mining.row_terms, mining.row_terms + nn, 0LL);
    mining.terms[0] = -1;
    *loss = std::numeric_limits<Dtype>::quiet_NaN();
    return;
  }
  // The dot products of the upper triangle, then each pair's distance from its one dot product, into both (i, j)
  // and (j, i): D is symmetric to the bit. Tile by tile, so the mirrored writes stay in cache.
  syrk_upper(n, dim, embedding, mining.dist);
  distances_from_upper_dots(n, sq_norm, static_cast<Dtype>(options.eps), options.squared, mining.dist);
  const TripletRowLoss<Dtype> term = {static_cast<Dtype>(options.margin), options.soft_margin};
  Dtype loss_sum = Dtype(0);
  long long terms = 0;
  for (int a = 0; a < n; ++a) {
    anchor_step_cpu(options.mining, term, n, a, labels, mining);
    loss_sum += mining.row_loss[a];
    terms += mining.row_terms[a];
  }
  mining.terms[0] = terms;
  *loss = terms > 0 ? loss_sum / static_cast<Dtype>(terms) : Dtype(0);
}

template <typename Dtype>
void triplet_backward_cpu(int n, int dim, const Dtype* embedding, const TripletOptions& options,
                          const TripletMining<Dtype>& mining, Dtype loss_weight, void* workspace,
                          Dtype* embedding_diff) {
  Dtype* scratch = static_cast<Dtype*>(workspace);
  const std::size_t nn = static_cast<std::size_t>(n);
  const std::size_t elements = nn * dim;
  const long long terms = mining.terms[0];
  if (terms < 0) {  // non-finite input: every gradient is NaN
    std::fill(embedding_diff, embedding_diff + elements, std::numeric_limits<Dtype>::quiet_NaN());
    return;
  }
  if (terms == 0) {
    std::memset(embedding_diff, 0, elements * sizeof(Dtype));
    return;
  }
  const Dtype scale = loss_weight / static_cast<Dtype>(terms);
  // S = V + V^T (symmetric), its row sums in increasing j; then dE/dX = diag(S 1) X - S X: a GEMM when S is dense
  // (BATCH_ALL), its non-zero entries alone when it is sparse (BATCH_HARD: <= 4n, SEMI_HARD: <= 4 n (K-1)).
  Dtype* s = scratch + nn;
  Dtype* row_sum = s + nn * nn;
  if (options.mining != TripletMiner::kBatchAll) {
    mined_gradient_weights(options.mining, n, mining, scale, options.squared, s);
    sparse_gradient(n, dim, embedding, s, row_sum, embedding_diff);
    return;
  }
  gradient_weights(n, mining.dist, mining.weight, scale, options.squared, s, row_sum);
  for (int i = 0; i < n; ++i) {
    const std::size_t row = i * static_cast<std::size_t>(dim);
    for (int k = 0; k < dim; ++k) embedding_diff[row + k] = row_sum[i] * embedding[row + k];
  }
  gemm(n, dim, n, Dtype(-1), s, embedding, Dtype(1), embedding_diff);
}

template void triplet_forward_cpu<float>(int, int, const float*, const float*, const TripletOptions&,
                                         const TripletMining<float>&, void*, float*);
template void triplet_forward_cpu<double>(int, int, const double*, const double*, const TripletOptions&,
                                          const TripletMining<double>&, void*, double*);
template void triplet_backward_cpu<float>(int, int, const float*, const TripletOptions&, const TripletMining<float>&,
                                          float, void*, float*);
template void triplet_backward_cpu<double>(int, int, const double*, const TripletOptions&,
                                           const TripletMining<double>&, double, void*, double*);

}  // namespace caffe_mining
