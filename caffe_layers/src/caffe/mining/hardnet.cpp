// CPU implementation of the HardNet loss core (see caffe_mining/hardnet.hpp for the math and the contracts).
#include "caffe_mining/hardnet.hpp"
#include "caffe_mining/distances/gemm_distances.hpp"
#include "caffe_mining/gradients/distance_gradients.hpp"
#include "caffe_mining/miners/hardest_negative_row.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace caffe_mining {

namespace {

// The row miner (SquaredRow, ColumnScan, hardest_in_row, ... average_row): miners/hardest_negative_row.hpp.
using namespace row_miner;  // NOLINT(build/namespaces): this file composes them

// Row i's outputs and its share of the loss from what its mining found.
template <typename Dtype>
void record_row(const HardNetOptions& options, int i, Dtype pos, const RowMining<Dtype>& found,
                const HardNetMining<Dtype>& mining, Dtype* loss_sum, int* valid_rows) {
  const Dtype neg = found.candidate.value;
  mining.pos_dist[i] = pos;
  mining.neg_count[i] = found.count;
  mining.neg_index[i] = found.chosen;
  mining.neg_swapped[i] = found.chosen >= 0 && found.candidate.swapped ? 1 : 0;
  mining.neg_dist[i] = found.chosen >= 0 ? neg : Dtype(0);
  if (found.count > 0) ++*valid_rows;
  const HardNetRowTerms<Dtype> terms =
      hardnet_row_terms(options.loss_type, static_cast<Dtype>(options.margin),
                        options.batch_reduce == HardNetBatchReduce::kAverage, found.count, pos, neg,
                        found.average_loss, found.average_dpos);
  mining.row_loss[i] = terms.loss;
  mining.dloss_dpos[i] = terms.dpos;
  mining.dloss_dneg[i] = terms.dneg;
  *loss_sum += terms.loss;
}

// AVERAGE's scalar weight V_ij = W_ij / D_ij (scaled): the diagonal carries the row's dloss/dpos, the others
// hardnet_average_weight.
template <typename Dtype>
Dtype average_weight_at(const Dtype* labels, const HardNetOptions& options, const HardNetMining<Dtype>& mining, int n,
                        int i, int j, Dtype scale) {
  const Dtype margin = static_cast<Dtype>(options.margin);
  const Dtype threshold = static_cast<Dtype>(options.duplicate_threshold);
  Dtype w;
  if (i == j) {
    w = mining.neg_count[i] > 0 ? mining.dloss_dpos[i] : Dtype(0);
  } else {
    w = hardnet_average_weight(mining.dist, labels, mining.pos_dist, mining.neg_count, n, i, j, options.loss_type,
                               margin, threshold, options.anchor_swap);
  }
  return math::safe_div(scale * w, mining.dist[static_cast<std::size_t>(i) * n + j]);
}

// AVERAGE four rows at a time (float; TRIPLET_MARGIN and CONTRASTIVE, whose row loss needs no exp): one lane per row
// in the forward, so each row's sums still add its candidates one by one in increasing j, and the backward's weights
// along j with their row sums added per lane after a transpose. Same operations in the same order as average_row
// and average_weight_at, so the same bits; SOFTMAX, double, and the last n % 4 rows and columns take those.
template <typename Dtype>
int average_forward_lanes(const Dtype*, int, const HardNetOptions&, const HardNetMining<Dtype>&,
                          Dtype*, int*) {
  return 0;
}
template <typename Dtype>
int average_backward_lanes(const Dtype*, const HardNetOptions&, const HardNetMining<Dtype>&, int, Dtype, Dtype*,
                           Dtype*, Dtype*) {
  return 0;
}

#if defined(__SSE2__)
inline bool average_has_lanes(const HardNetOptions& options) {
  return options.loss_type == HardNetLossType::kTripletMargin || options.loss_type == HardNetLossType::kContrastive;
}

inline __m128 select_lanes(__m128 mask, __m128 if_set, __m128 if_clear) {
  return _mm_or_ps(_mm_and_ps(mask, if_set), _mm_andnot_ps(mask, if_clear));
}

// The diagonal and same-label lanes: row lanes `rows` (labels row_labels) against column j, or the reverse.
inline __m128 excluded_lanes(__m128i rows, int j, const float* labels, __m128 row_labels) {
  __m128 excluded = _mm_castsi128_ps(_mm_cmpeq_epi32(rows, _mm_set1_epi32(j)));
  if (labels != nullptr) excluded = _mm_or_ps(excluded, _mm_cmpeq_ps(row_labels, _mm_set1_ps(labels[j])));
  return excluded;
}

// hardnet_row_loss_dneg(...) / count of the lanes (TRIPLET_MARGIN or CONTRASTIVE): dneg is -1 or 0, so the quotient
// is minus_inverse = -1 / count (divided once per row or column, the same bits) or +0.
inline __m128 dneg_over_count_lanes(HardNetLossType type, __m128 margin, __m128 pos, __m128 neg,
                                    __m128 minus_inverse) {
  const __m128 hinge = type == HardNetLossType::kContrastive ? _mm_sub_ps(margin, neg)
                                                              : _mm_sub_ps(_mm_add_ps(margin, pos), neg);
  return _mm_and_ps(_mm_cmpgt_ps(hinge, _mm_setzero_ps()), minus_inverse);
}

template <>
int average_forward_lanes<float>(const float* labels, int n, const HardNetOptions& options,
                                 const HardNetMining<float>& mining, float* loss_sum, int* valid_rows) {
  if (!average_has_lanes(options)) return 0;
  const float* dist = mining.dist;
  const std::size_t nn = static_cast<std::size_t>(n);
  const int columns = n & ~3;
  const bool swap = options.anchor_swap, contrastive = options.loss_type == HardNetLossType::kContrastive;
  const __m128 margin = _mm_set1_ps(static_cast<float>(options.margin));
  const __m128 threshold = _mm_set1_ps(static_cast<float>(options.duplicate_threshold));
  const __m128 zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f), all = _mm_castsi128_ps(_mm_set1_epi32(-1));
  int i0 = 0;
  for (; i0 + 4 <= n; i0 += 4) {
    const __m128 pos = _mm_setr_ps(dist[i0 * nn + i0], dist[(i0 + 1) * nn + i0 + 1], dist[(i0 + 2) * nn + i0 + 2],
                                   dist[(i0 + 3) * nn + i0 + 3]);
    const __m128i rows = _mm_setr_epi32(i0, i0 + 1, i0 + 2, i0 + 3);
    const __m128 row_labels = labels != nullptr ? _mm_loadu_ps(labels + i0) : zero;
    __m128 count = zero, loss = zero, dpos = zero, best = _mm_set1_ps(std::numeric_limits<float>::infinity());
    __m128 best_index = _mm_set1_ps(-1.0f), best_swapped = zero;
    for (int j0 = 0; j0 < columns; j0 += 4) {
      __m128 d[4] = {_mm_loadu_ps(dist + i0 * nn + j0), _mm_loadu_ps(dist + (i0 + 1) * nn + j0),
                     _mm_loadu_ps(dist + (i0 + 2) * nn + j0), _mm_loadu_ps(dist + (i0 + 3) * nn + j0)};
      _MM_TRANSPOSE4_PS(d[0], d[1], d[2], d[3]);  // d[m]: D_ij of the four rows at column j0 + m
      for (int m = 0; m < 4; ++m) {
        const int j = j0 + m;
        const __m128 excluded = excluded_lanes(rows, j, labels, row_labels);
        const __m128 valid_ij = _mm_andnot_ps(excluded, _mm_cmpnlt_ps(d[m], threshold));
        __m128 value = d[m], valid = valid_ij, swapped = zero;
        if (swap) {  // D_ji of the four rows: row j of the matrix, columns i0..i0+3
          const __m128 d_ji = _mm_loadu_ps(dist + j * nn + i0);
          const __m128 valid_ji = _mm_andnot_ps(excluded, _mm_cmpnlt_ps(d_ji, threshold));
          swapped = _mm_and_ps(valid_ji, _mm_or_ps(_mm_xor_ps(valid_ij, all), _mm_cmplt_ps(d_ji, d[m])));
          value = select_lanes(swapped, d_ji, d[m]);
          valid = _mm_or_ps(valid_ij, valid_ji);
        }
        count = _mm_add_ps(count, _mm_and_ps(valid, one));
        const __m128 harder = _mm_and_ps(valid, _mm_cmplt_ps(value, best));  // increasing j: ties keep the first
        best = select_lanes(harder, value, best);
        best_index = select_lanes(harder, _mm_set1_ps(static_cast<float>(j)), best_index);
        best_swapped = select_lanes(harder, swapped, best_swapped);
        __m128 row_loss, row_dpos;
        if (contrastive) {
          const __m128 hinge = _mm_sub_ps(margin, value);
          row_loss = _mm_add_ps(_mm_and_ps(_mm_cmpgt_ps(hinge, zero), hinge), pos);
          row_dpos = one;
        } else {
          const __m128 hinge = _mm_sub_ps(_mm_add_ps(margin, pos), value);
          const __m128 active = _mm_cmpgt_ps(hinge, zero);
          row_loss = _mm_and_ps(active, hinge);
          row_dpos = _mm_and_ps(active, one);
        }
        loss = _mm_add_ps(loss, _mm_and_ps(valid, row_loss));
        dpos = _mm_add_ps(dpos, _mm_and_ps(valid, row_dpos));
      }
    }
    float lane_count[4], lane_loss[4], lane_dpos[4], lane_best[4], lane_index[4], lane_pos[4];
    _mm_storeu_ps(lane_count, count);
    _mm_storeu_ps(lane_loss, loss);
    _mm_storeu_ps(lane_dpos, dpos);
    _mm_storeu_ps(lane_best, best);
    _mm_storeu_ps(lane_index, best_index);
    _mm_storeu_ps(lane_pos, pos);
    const int lane_swapped = _mm_movemask_ps(best_swapped);
    for (int k = 0; k < 4; ++k) {
      RowMining<float> found;
      found.count = static_cast<int>(lane_count[k]);
      found.chosen = static_cast<int>(lane_index[k]);
      if (found.chosen >= 0) found.candidate = {lane_best[k], true, (lane_swapped & (1 << k)) != 0};
      found.average_loss = lane_loss[k];
      found.average_dpos = lane_dpos[k];
      found = average_row(dist, labels, n, i0 + k, lane_pos[k], options, columns, found);
      record_row(options, i0 + k, lane_pos[k], found, mining, loss_sum, valid_rows);
    }
  }
  return i0;
}

template <>
int average_backward_lanes<float>(const float* labels, const HardNetOptions& options,
                                  const HardNetMining<float>& mining, int n, float scale, float* weight,
                                  float* row_sum, float* col_sum) {
  if (!average_has_lanes(options)) return 0;
  const float* dist = mining.dist;
  const std::size_t nn = static_cast<std::size_t>(n);
  const int columns = n & ~3;
  const bool swap = options.anchor_swap;
  const HardNetLossType type = options.loss_type;
  const __m128 margin = _mm_set1_ps(static_cast<float>(options.margin));
  const __m128 threshold = _mm_set1_ps(static_cast<float>(options.duplicate_threshold));
  const __m128 zero = _mm_setzero_ps(), all = _mm_castsi128_ps(_mm_set1_epi32(-1)), scales = _mm_set1_ps(scale);
  int i0 = 0;
  for (; i0 + 4 <= n; i0 += 4) {
    __m128 sums = zero;  // row sums, one lane per row
    for (int j0 = 0; j0 < columns; j0 += 4) {
      __m128 d_ji[4], pos_j = zero, minus_inverse_j = zero;
      if (swap) {
        for (int m = 0; m < 4; ++m) d_ji[m] = _mm_loadu_ps(dist + (j0 + m) * nn + i0);
        _MM_TRANSPOSE4_PS(d_ji[0], d_ji[1], d_ji[2], d_ji[3]);  // d_ji[k]: D_ji of row i0 + k along j0..j0+3
        pos_j = _mm_loadu_ps(mining.pos_dist + j0);
        const __m128i count_j = _mm_loadu_si128(reinterpret_cast<const __m128i*>(mining.neg_count + j0));
        minus_inverse_j = _mm_div_ps(_mm_set1_ps(-1.0f), _mm_cvtepi32_ps(count_j));
      }
      const __m128i cols = _mm_setr_epi32(j0, j0 + 1, j0 + 2, j0 + 3);
      const __m128 col_labels = labels != nullptr ? _mm_loadu_ps(labels + j0) : zero;
      __m128 v[4];
      for (int k = 0; k < 4; ++k) {
        const int i = i0 + k;
        const __m128 d_ij = _mm_loadu_ps(dist + i * nn + j0);
        const __m128 excluded = excluded_lanes(cols, i, labels, col_labels);
        const __m128 valid_ij = _mm_andnot_ps(excluded, _mm_cmpnlt_ps(d_ij, threshold));
        const __m128 pos_i = _mm_set1_ps(mining.pos_dist[i]);
        const __m128 minus_inverse_i = _mm_set1_ps(-1.0f / static_cast<float>(mining.neg_count[i]));
        // Row i's candidate j is D_ij (not swapped): its term. With swap, row j's candidate i may be the swapped D_ij.
        __m128 own = valid_ij, other = zero;
        if (swap) {
          const __m128 valid_ji = _mm_andnot_ps(excluded, _mm_cmpnlt_ps(d_ji[k], threshold));
          own = _mm_andnot_ps(_mm_and_ps(valid_ji, _mm_cmplt_ps(d_ji[k], d_ij)), valid_ij);
          other = _mm_and_ps(valid_ij, _mm_or_ps(_mm_xor_ps(valid_ji, all), _mm_cmplt_ps(d_ij, d_ji[k])));
        }
        __m128 w = _mm_add_ps(zero, _mm_and_ps(own, dneg_over_count_lanes(type, margin, pos_i, d_ij, minus_inverse_i)));
        if (swap) {
          w = _mm_add_ps(w, _mm_and_ps(other, dneg_over_count_lanes(type, margin, pos_j, d_ij, minus_inverse_j)));
        }
        if (j0 <= i && i < j0 + 4) {  // the diagonal: the row's dloss/dpos
          const float diagonal = mining.neg_count[i] > 0 ? mining.dloss_dpos[i] : 0.0f;
          w = select_lanes(_mm_castsi128_ps(_mm_cmpeq_epi32(cols, _mm_set1_epi32(i))), _mm_set1_ps(diagonal), w);
        }
        v[k] = _mm_and_ps(_mm_cmpneq_ps(d_ij, zero), _mm_div_ps(_mm_mul_ps(scales, w), d_ij));  // safe_div
        _mm_storeu_ps(weight + i * nn + j0, v[k]);
        _mm_storeu_ps(col_sum + j0, _mm_add_ps(_mm_loadu_ps(col_sum + j0), v[k]));  // rows in increasing i
      }
      _MM_TRANSPOSE4_PS(v[0], v[1], v[2], v[3]);  // v[m]: column j0 + m of the four rows
      for (int m = 0; m < 4; ++m) sums = _mm_add_ps(sums, v[m]);
    }
    _mm_storeu_ps(row_sum + i0, sums);
    for (int k = 0; k < 4; ++k) {  // the last n % 4 columns
      const int i = i0 + k;
      for (int j = columns; j < n; ++j) {
        const float v = average_weight_at(labels, options, mining, n, i, j, scale);
        weight[i * nn + j] = v;
        row_sum[i] += v;
        col_sum[j] += v;
      }
    }
  }
  return i0;
}
#endif

}  // namespace

int hardnet_cpu_lanes() { return row_miner::row_scan_lanes(); }

template <typename Dtype>
void hardnet_forward_cpu(int n, int dim, const Dtype* anchor, const Dtype* positive, const Dtype* labels,
                         const Dtype* uniforms, const HardNetOptions& options, const HardNetMining<Dtype>& mining,
                         void* workspace, Dtype* loss) {
  Dtype* scratch = static_cast<Dtype*>(workspace);
  const std::size_t nn = static_cast<std::size_t>(n);
  const Dtype eps = static_cast<Dtype>(options.eps);
  const Dtype threshold = static_cast<Dtype>(options.duplicate_threshold);
  const bool swap = options.anchor_swap;

  // A * P^T, then element-wise into distances.
  Dtype* sq_norm_a = scratch;
  Dtype* sq_norm_p = scratch + nn;
  squared_norms(n, dim, anchor, sq_norm_a);
  squared_norms(n, dim, positive, sq_norm_p);
  if (distances_overflow(n, sq_norm_a, sq_norm_p)) {
    for (int i = 0; i < n; ++i) {
      mining.pos_dist[i] = std::numeric_limits<Dtype>::quiet_NaN();
      mining.neg_dist[i] = mining.row_loss[i] = mining.dloss_dpos[i] = mining.dloss_dneg[i] = Dtype(0);
      mining.neg_index[i] = -1;
      mining.neg_swapped[i] = mining.neg_count[i] = 0;
    }
    mining.valid_rows[0] = -1;
    *loss = std::numeric_limits<Dtype>::quiet_NaN();
    return;
  }
  dot_products(n, dim, anchor, positive, mining.dist);
  Dtype loss_sum = Dtype(0);
  int valid_rows = 0;

  if (options.batch_reduce == HardNetBatchReduce::kAverage) {
    // AVERAGE reads every candidate, and its backward the whole distance matrix: computed first.
    for (int i = 0; i < n; ++i) dots_to_distances(n, sq_norm_a[i], sq_norm_p, eps, mining.dist + i * nn);
    for (int i = average_forward_lanes(labels, n, options, mining, &loss_sum, &valid_rows); i < n; ++i) {
      const Dtype pos = mining.dist[i * nn + i];
      record_row(options, i, pos, average_row(mining.dist, labels, n, i, pos, options), mining, &loss_sum,
                 &valid_rows);
    }
    mining.valid_rows[0] = valid_rows;
    *loss = valid_rows > 0 ? loss_sum / Dtype(valid_rows) : Dtype(0);
    return;
  }

  // MIN and RANDOM mine each row from its dot products, on the squared scale, while the row is in cache; `dist`
  // keeps the dot products. With anchor swap the same pass fills the columns' side (ColumnScan), and each row is
  // decided once every row has been scanned.
  const Dtype x_threshold = squared_threshold(threshold);
  Dtype* block_min = scratch + 2 * nn;  // one per block of a row
  Dtype* column_state = block_min + (nn + kHardnetRowBlock - 1) / kHardnetRowBlock;
  const bool minimum = options.batch_reduce == HardNetBatchReduce::kMin;
  ColumnScan<Dtype> cols = {column_state, minimum ? column_state + nn : nullptr, column_state + 2 * nn};
  if (swap) {
    for (int c = 0; c < n; ++c) {
      cols.duplicates[c] = Dtype(0);
      if (minimum) cols.x_min[c] = std::numeric_limits<Dtype>::infinity();
    }
  }
  const bool decided_in_scan = minimum && !swap;
  for (int i = 0; i < n; ++i) {
    const Dtype* row = mining.dist + i * nn;
    const Dtype pos = std::sqrt(squared_distance_from_dot(sq_norm_a[i], sq_norm_p[i], row[i], eps));
    const SquaredRow<Dtype> squared = {row, sq_norm_a[i], sq_norm_p, labels, i, eps, x_threshold};
    RowMining<Dtype> found;
    if (minimum) {
      found = hardest_in_row(squared, n, block_min, swap ? &cols : nullptr);
    } else {
      found.count = valid_in_row(squared, n, swap ? &cols : nullptr);
    }
    if (decided_in_scan) {
      record_row(options, i, pos, found, mining, &loss_sum, &valid_rows);
    } else {  // the row's side, kept in its outputs until the row is decided
      mining.pos_dist[i] = pos;
      mining.neg_count[i] = found.count;
      mining.neg_index[i] = found.chosen;
      mining.neg_dist[i] = found.candidate.value;
    }
  }
  if (!decided_in_scan) {
    const DotMatrix<Dtype> matrix = {mining.dist, sq_norm_a, sq_norm_p, labels, n, eps, threshold};
    for (int i = 0; i < n; ++i) {
      const int row_count = mining.neg_count[i];
      const int eligible = eligible_in_row(labels, n, i);
      RowMining<Dtype> found;
      found.count = row_count;
      int col_count = 0;
      if (swap) {
        col_count = eligible - static_cast<int>(cols.duplicates[i]);
        if (row_count < eligible && col_count < eligible) {
          found.count = valid_candidates(matrix, i);  // duplicates both ways: count them one by one
        } else {
          found.count = eligible;
        }
      }
      if (minimum) {
        const Dtype col_min = col_count > 0 ? std::sqrt(cols.x_min[i]) : Dtype(0);
        hardest_with_swap(row_count, mining.neg_index[i], mining.neg_dist[i], col_count,
                          static_cast<int>(cols.first_row[i]), col_min, &found);
      } else if (found.count > 0) {
        const int rank = hardnet_random_rank(uniforms[i], found.count);
        // Every allowed column is a candidate unless the row has duplicates: then walk its candidates.
        found.chosen = found.count == eligible ? eligible_at_rank(labels, n, i, rank)
                                               : valid_at_rank(matrix, i, rank, swap);
        found.candidate = matrix.candidate(i, found.chosen, swap);
      }
      record_row(options, i, mining.pos_dist[i], found, mining, &loss_sum, &valid_rows);
    }
  }
  mining.valid_rows[0] = valid_rows;
  *loss = valid_rows > 0 ? loss_sum / Dtype(valid_rows) : Dtype(0);
}

template <typename Dtype>
void hardnet_backward_cpu(int n, int dim, const Dtype* anchor, const Dtype* positive, const Dtype* labels,
                          const HardNetOptions& options, const HardNetMining<Dtype>& mining, Dtype loss_weight,
                          void* workspace, Dtype* anchor_diff, Dtype* positive_diff) {
  Dtype* scratch = static_cast<Dtype*>(workspace);
  const std::size_t nn = static_cast<std::size_t>(n);
  const std::size_t elements = nn * dim;
  const int valid_rows = mining.valid_rows[0];
  if (valid_rows < 0) {  // non-finite input: every gradient is NaN
    if (anchor_diff != nullptr) std::fill(anchor_diff, anchor_diff + elements, std::numeric_limits<Dtype>::quiet_NaN());
    if (positive_diff != nullptr) {
      std::fill(positive_diff, positive_diff + elements, std::numeric_limits<Dtype>::quiet_NaN());
    }
    return;
  }
  if (anchor_diff != nullptr) std::memset(anchor_diff, 0, elements * sizeof(Dtype));
  if (positive_diff != nullptr) std::memset(positive_diff, 0, elements * sizeof(Dtype));
  if (valid_rows == 0 || (anchor_diff == nullptr && positive_diff == nullptr)) return;
  const Dtype scale = loss_weight / Dtype(valid_rows);

  if (options.batch_reduce != HardNetBatchReduce::kAverage) {
    // Each row touches its positive pair (D_ii) and its one chosen negative (D_ij, or D_ji when swapped).
    for (int i = 0; i < n; ++i) {
      if (mining.neg_count[i] == 0) continue;
      const Dtype* a_i = anchor + i * static_cast<std::size_t>(dim);
      const Dtype* p_i = positive + i * static_cast<std::size_t>(dim);
      Dtype* da_i = anchor_diff ? anchor_diff + i * static_cast<std::size_t>(dim) : nullptr;
      Dtype* dp_i = positive_diff ? positive_diff + i * static_cast<std::size_t>(dim) : nullptr;
      // dD_ij/da_i = (a_i - p_j) / D_ij, dD_ij/dp_j = -(a_i - p_j) / D_ij.
      const Dtype pos_coeff = math::safe_div(scale * mining.dloss_dpos[i], mining.pos_dist[i]);
      add_distance_gradient(dim, pos_coeff, a_i, p_i, da_i, dp_i);
      const int j = mining.neg_index[i];
      const Dtype neg_coeff = math::safe_div(scale * mining.dloss_dneg[i], mining.neg_dist[i]);
      const std::size_t row_j = j * static_cast<std::size_t>(dim);
      if (mining.neg_swapped[i]) {  // value D_ji = d(a_j, p_i)
        add_distance_gradient(dim, neg_coeff, anchor + row_j, p_i, anchor_diff ? anchor_diff + row_j : nullptr, dp_i);
      } else {  // value D_ij = d(a_i, p_j)
        add_distance_gradient(dim, neg_coeff, a_i, positive + row_j, da_i,
                              positive_diff ? positive_diff + row_j : nullptr);
      }
    }
    return;
  }

  // AVERAGE: every D_ij can carry weight (W_ij = d loss / d D_ij). With V_ij = W_ij / D_ij the gradient is
  //   dA = diag(V 1) A - V P,   dP = diag(V^T 1) P - V^T A   (two GEMMs, no n x n x dim tensor).
  Dtype* weight = scratch;  // V, n x n
  Dtype* row_sum = scratch + nn * nn;
  Dtype* col_sum = row_sum + nn;
  for (int i = 0; i < n; ++i) row_sum[i] = col_sum[i] = Dtype(0);
  // Row sums in increasing j, column sums in increasing i.
  for (int i = average_backward_lanes(labels, options, mining, n, scale, weight, row_sum, col_sum); i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      weight[i * nn + j] = average_weight_at(labels, options, mining, n, i, j, scale);
      row_sum[i] += weight[i * nn + j];
      col_sum[j] += weight[i * nn + j];
    }
  }
  dense_distance_gradient(n, dim, weight, row_sum, col_sum, anchor, positive, anchor_diff, positive_diff);
}

template void hardnet_forward_cpu<float>(int, int, const float*, const float*, const float*, const float*,
                                         const HardNetOptions&, const HardNetMining<float>&, void*, float*);
template void hardnet_forward_cpu<double>(int, int, const double*, const double*, const double*, const double*,
                                          const HardNetOptions&, const HardNetMining<double>&, void*, double*);
template void hardnet_backward_cpu<float>(int, int, const float*, const float*, const float*, const HardNetOptions&,
                                          const HardNetMining<float>&, float, void*, float*, float*);
template void hardnet_backward_cpu<double>(int, int, const double*, const double*, const double*,
                                           const HardNetOptions&, const HardNetMining<double>&, double, void*,
                                           double*, double*);

}  // namespace caffe_mining
