// CPU implementation of the HardNet loss core (see caffe_mining/hardnet.hpp for the math and the contracts).
#include "caffe_mining/hardnet.hpp"
#include "caffe_mining/distances/squared_norm.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace caffe_mining {

namespace {

// Row-major C = alpha * op(A) * op(B) + beta * C.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}
void gemm(bool trans_a, bool trans_b, int m, int n, int k, double alpha, const double* a, int lda, const double* b,
          int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}

// |x_i|^2 of each row, in the fixed order of squared_norm: identical rows get identical norms (ties stay ties).
template <typename Dtype>
void squared_norms(int n, int dim, const Dtype* x, Dtype* sq_norm) {
  for (int i = 0; i < n; ++i) sq_norm[i] = squared_norm(dim, x + static_cast<std::size_t>(i) * dim);
}

// Whether some squared distance could be NaN or overflow (the non-finite rule of hardnet.hpp): a norm that is NaN or
// inf (a NaN or inf feature, or an overflowing sum), or 2 (max |a_i|^2 + max |p_j|^2) = inf, which bounds every
// |a_i|^2 + |p_j|^2 - 2 a_i.p_j <= (|a_i| + |p_j|)^2.
template <typename Dtype>
bool distances_overflow(int n, const Dtype* sq_norm_a, const Dtype* sq_norm_p) {
  const Dtype kMax = std::numeric_limits<Dtype>::max();
  Dtype max_a = Dtype(0), max_p = Dtype(0);
  for (int i = 0; i < n; ++i) {
    if (!(sq_norm_a[i] <= kMax) || !(sq_norm_p[i] <= kMax)) return true;  // NaN or inf
    max_a = std::max(max_a, sq_norm_a[i]);
    max_p = std::max(max_p, sq_norm_p[i]);
  }
  return !(Dtype(2) * (max_a + max_p) <= kMax);
}

// x = sqrt(x) over a buffer. Under GCC's default -fmath-errno a sqrt loop keeps a libm call (for errno on a negative
// argument) and does not vectorize; the SSE square root is the same correctly rounded IEEE operation, so the values
// are identical (GCC 12 ignores __attribute__((optimize("no-math-errno"))) for this). Other targets take the plain
// loop (vectorized there when math errno is off).
inline void sqrt_in_place(int count, float* x) {
  int k = 0;
#if defined(__SSE2__)
  for (; k + 4 <= count; k += 4) _mm_storeu_ps(x + k, _mm_sqrt_ps(_mm_loadu_ps(x + k)));
#endif
  for (; k < count; ++k) x[k] = std::sqrt(x[k]);
}
inline void sqrt_in_place(int count, double* x) {
  int k = 0;
#if defined(__SSE2__)
  for (; k + 2 <= count; k += 2) _mm_storeu_pd(x + k, _mm_sqrt_pd(_mm_loadu_pd(x + k)));
#endif
  for (; k < count; ++k) x[k] = std::sqrt(x[k]);
}

// Row i of the GEMM's dot products a_i.p_j turned into D_ij: distance_from_dot, in two passes so that the square
// roots run vectorized (same operations in the same order, so the same values).
template <typename Dtype>
void dots_to_distances(int n, Dtype sq_norm_a, const Dtype* sq_norm_p, Dtype eps, Dtype* row) {
  for (int j = 0; j < n; ++j) {
    const Dtype sq = sq_norm_a + sq_norm_p[j] - Dtype(2) * row[j];
    row[j] = (sq > Dtype(0) ? sq : Dtype(0)) + eps;  // clamped as in distance_from_dot
  }
  sqrt_in_place(n, row);
}

// What the mining of one row found.
template <typename Dtype>
struct RowMining {
  int count = 0;                                                  // number of valid candidates
  int chosen = -1;                                                // column of the chosen candidate, -1 if none
  HardNetCandidate<Dtype> candidate = {Dtype(0), false, false};  // its value and whether it is swapped
  Dtype average_loss = Dtype(0), average_dpos = Dtype(0);         // AVERAGE: sums over the valid candidates
};

// MIN without anchor swap (the default) mines each row by itself, on the squared scale: with
// x = max(|a|^2 + |p|^2 - 2 a.p, 0) + eps, D = sqrt(x) is correctly rounded and so non-decreasing in x. Every
// comparison the rule makes (D against the duplicate threshold, the row's smallest D) can then be made on x with
// exact bounds, and the square root is taken for the row's minimum only, not for each of the n*n entries.

// The squared-scale helpers (x of distance_from_dot, squared_threshold, largest_with_same_root) are
// distances/dot_distance.hpp's, shared with the CUDA path.
template <typename Dtype>
inline Dtype squared_distance(Dtype sq_norm_a, Dtype sq_norm_p, Dtype dot, Dtype eps) {
  return squared_distance_from_dot(sq_norm_a, sq_norm_p, dot, eps);
}

// Row i of the GEMM's dot products, read on the squared scale. The validity rule is hardnet_negative_valid's,
// with D < threshold read as x < x_threshold.
template <typename Dtype>
struct SquaredRow {
  const Dtype* dots;       // a_i.p_j, j = 0..n-1
  Dtype sq_norm_a;         // |a_i|^2
  const Dtype* sq_norm_p;  // |p_j|^2
  const Dtype* labels;     // or null
  int i;
  Dtype eps, x_threshold;

  Dtype x(int j) const { return squared_distance(sq_norm_a, sq_norm_p[j], dots[j], eps); }
  bool valid(int j, Dtype x_j) const {
    return j != i && !(x_j < x_threshold) && (labels == nullptr || labels[j] != labels[i]);
  }
};

// What a block of columns holds: the smallest x among its valid entries (infinity if none) and their number.
template <typename Dtype>
struct BlockMinimum {
  Dtype x_min;
  int count;
};

// Columns [start, end) of a row, one at a time; also the tails of the vector versions.
template <typename Dtype>
BlockMinimum<Dtype> block_minimum_scalar(const SquaredRow<Dtype>& row, int start, int end) {
  BlockMinimum<Dtype> block = {std::numeric_limits<Dtype>::infinity(), 0};
  for (int j = start; j < end; ++j) {
    const Dtype x = row.x(j);
    if (!row.valid(j, x)) continue;
    ++block.count;
    if (x < block.x_min) block.x_min = x;
  }
  return block;
}

// The lowest valid column of [start, end) whose x is at most x_bound, or -1.
template <typename Dtype>
int first_at_most_scalar(const SquaredRow<Dtype>& row, int start, int end, Dtype x_bound) {
  for (int j = start; j < end; ++j) {
    const Dtype x = row.x(j);
    if (row.valid(j, x) && x <= x_bound) return j;
  }
  return -1;
}

template <typename Dtype>
BlockMinimum<Dtype> block_minimum(const SquaredRow<Dtype>& row, int start, int end) {
  return block_minimum_scalar(row, start, end);
}
template <typename Dtype>
int first_at_most(const SquaredRow<Dtype>& row, int start, int end, Dtype x_bound) {
  return first_at_most_scalar(row, start, end, x_bound);
}

#if defined(__SSE2__)
// Float rows four columns at a time. GCC does not vectorize a float minimum without -ffinite-math-only, so it is
// spelled out; each lane does the scalar version's operations in the same order, so the results are the same.
struct SquaredLanes {
  __m128 x;        // x of columns j..j+3
  __m128 invalid;  // all ones where the column is not a valid negative
};

// kDiagonal: whether columns j..j+3 may hold column i (the positive, never a negative): checked only then.
template <bool kDiagonal>
inline SquaredLanes squared_lanes(const SquaredRow<float>& row, int j) {
  const __m128 sq = _mm_sub_ps(_mm_add_ps(_mm_set1_ps(row.sq_norm_a), _mm_loadu_ps(row.sq_norm_p + j)),
                               _mm_mul_ps(_mm_set1_ps(2.0f), _mm_loadu_ps(row.dots + j)));
  SquaredLanes lanes;
  lanes.x = _mm_add_ps(_mm_and_ps(_mm_cmpgt_ps(sq, _mm_setzero_ps()), sq), _mm_set1_ps(row.eps));
  lanes.invalid = _mm_cmplt_ps(lanes.x, _mm_set1_ps(row.x_threshold));
  if (kDiagonal) {
    const __m128i column = _mm_add_epi32(_mm_set1_epi32(j), _mm_setr_epi32(0, 1, 2, 3));
    lanes.invalid = _mm_or_ps(lanes.invalid, _mm_castsi128_ps(_mm_cmpeq_epi32(column, _mm_set1_epi32(row.i))));
  }
  if (row.labels != nullptr) {
    lanes.invalid = _mm_or_ps(lanes.invalid, _mm_cmpeq_ps(_mm_loadu_ps(row.labels + j), _mm_set1_ps(row.labels[row.i])));
  }
  return lanes;
}

template <bool kDiagonal>
int block_minimum_lanes(const SquaredRow<float>& row, int start, int end, __m128* x_min, __m128i* minus_invalid) {
  int j = start;
  for (; j + 4 <= end; j += 4) {
    const SquaredLanes lanes = squared_lanes<kDiagonal>(row, j);
    // An invalid lane is ORed to all ones, a NaN, and _mm_min_ps(a, b) returns b when a is NaN: it is skipped.
    *x_min = _mm_min_ps(_mm_or_ps(lanes.x, lanes.invalid), *x_min);
    *minus_invalid = _mm_add_epi32(*minus_invalid, _mm_castps_si128(lanes.invalid));  // -1 per invalid column
  }
  return j;
}

template <>
BlockMinimum<float> block_minimum<float>(const SquaredRow<float>& row, int start, int end) {
  __m128 x_min = _mm_set1_ps(std::numeric_limits<float>::infinity());
  __m128i minus_invalid = _mm_setzero_si128();
  const int j = start <= row.i && row.i < end ? block_minimum_lanes<true>(row, start, end, &x_min, &minus_invalid)
                                             : block_minimum_lanes<false>(row, start, end, &x_min, &minus_invalid);
  float mins[4];
  std::int32_t invalid[4];
  _mm_storeu_ps(mins, x_min);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(invalid), minus_invalid);
  BlockMinimum<float> block = block_minimum_scalar(row, j, end);
  block.count += (j - start) + invalid[0] + invalid[1] + invalid[2] + invalid[3];
  for (float m : mins) block.x_min = m < block.x_min ? m : block.x_min;
  return block;
}

template <>
int first_at_most<float>(const SquaredRow<float>& row, int start, int end, float x_bound) {
  int j = start;
  for (; j + 4 <= end; j += 4) {
    const SquaredLanes lanes = squared_lanes<true>(row, j);
    const int hits = _mm_movemask_ps(_mm_andnot_ps(lanes.invalid, _mm_cmple_ps(lanes.x, _mm_set1_ps(x_bound))));
    if (hits != 0) return j + __builtin_ctz(hits);
  }
  return first_at_most_scalar(row, j, end, x_bound);
}
#endif

// Row i's hardest negative. The row is scanned in blocks, keeping each block's minimum (block_min, one per block);
// the chosen column is then the lowest valid one whose x has the row's minimum square root (hardnet_harder's
// order on D), searched only in the blocks that can hold one.
template <typename Dtype>
RowMining<Dtype> hardest_in_row(const SquaredRow<Dtype>& row, int n, Dtype* block_min) {
  RowMining<Dtype> found;
  Dtype x_min = std::numeric_limits<Dtype>::infinity();
  for (int start = 0, b = 0; start < n; start += kHardnetRowBlock, ++b) {
    const BlockMinimum<Dtype> block = block_minimum(row, start, std::min(start + kHardnetRowBlock, n));
    block_min[b] = block.x_min;
    found.count += block.count;
    if (block.x_min < x_min) x_min = block.x_min;
  }
  if (found.count == 0) return found;
  const Dtype x_max = largest_with_same_root(x_min);
  for (int start = 0, b = 0; start < n; start += kHardnetRowBlock, ++b) {
    if (!(block_min[b] <= x_max)) continue;
    const int j = first_at_most(row, start, std::min(start + kHardnetRowBlock, n), x_max);
    if (j >= 0) {
      found.chosen = j;
      found.candidate = {std::sqrt(x_min), true, false};
      return found;
    }
  }
  return found;  // not reached: the block holding x_min has a valid column with x <= x_max
}

// Any reduction, anchor swap or not: candidates from the whole distance matrix (every row must be computed).
template <typename Dtype>
RowMining<Dtype> mine_row(const Dtype* dist, const Dtype* labels, const Dtype* uniforms, int n, int i, Dtype pos,
                          const HardNetOptions& options) {
  const Dtype margin = static_cast<Dtype>(options.margin);
  const Dtype threshold = static_cast<Dtype>(options.duplicate_threshold);
  const bool swap = options.anchor_swap;
  const HardNetLossType type = options.loss_type;
  // One pass: count, hardest, and the AVERAGE sums.
  RowMining<Dtype> found;
  for (int j = 0; j < n; ++j) {
    const HardNetCandidate<Dtype> cand = hardnet_candidate(dist, labels, n, i, j, threshold, swap);
    if (!cand.valid) continue;
    ++found.count;
    if (hardnet_harder(cand.value, j, found.candidate.value, found.chosen)) {
      found.chosen = j;
      found.candidate = cand;
    }
    if (options.batch_reduce == HardNetBatchReduce::kAverage) {
      found.average_loss += hardnet_row_loss(type, margin, pos, cand.value);
      found.average_dpos += hardnet_row_loss_dpos(type, margin, pos, cand.value);
    }
  }
  if (options.batch_reduce == HardNetBatchReduce::kRandom && found.count > 0) {
    int rank = hardnet_random_rank(uniforms[i], found.count);
    for (int j = 0; j < n; ++j) {
      const HardNetCandidate<Dtype> cand = hardnet_candidate(dist, labels, n, i, j, threshold, swap);
      if (cand.valid && rank-- == 0) {
        found.chosen = j;
        found.candidate = cand;
        break;
      }
    }
  }
  return found;
}

// The gradient of one distance d(a, p) with coefficient c: a_diff += c (a - p) and p_diff -= c (a - p), over dim
// values, in one pass over a and p (either target may be null).
template <typename Dtype>
void add_distance_gradient(int dim, Dtype coeff, const Dtype* a, const Dtype* p, Dtype* a_diff, Dtype* p_diff) {
  if (coeff == Dtype(0)) return;
  if (a_diff != nullptr && p_diff != nullptr) {
    for (int k = 0; k < dim; ++k) {
      const Dtype step = coeff * (a[k] - p[k]);
      a_diff[k] += step;
      p_diff[k] -= step;
    }
  } else if (a_diff != nullptr) {
    for (int k = 0; k < dim; ++k) a_diff[k] += coeff * (a[k] - p[k]);
  } else if (p_diff != nullptr) {
    for (int k = 0; k < dim; ++k) p_diff[k] -= coeff * (a[k] - p[k]);
  }
}

}  // namespace

template <typename Dtype>
void hardnet_forward_cpu(int n, int dim, const Dtype* anchor, const Dtype* positive, const Dtype* labels,
                         const Dtype* uniforms, const HardNetOptions& options, const HardNetMining<Dtype>& mining,
                         Dtype* scratch, Dtype* loss) {
  const std::size_t nn = static_cast<std::size_t>(n);
  const Dtype eps = static_cast<Dtype>(options.eps);
  const Dtype margin = static_cast<Dtype>(options.margin);
  const Dtype threshold = static_cast<Dtype>(options.duplicate_threshold);
  const HardNetLossType type = options.loss_type;
  // MIN without anchor swap mines each row from its dot products alone, on the squared scale, while the row is in
  // cache; `dist` keeps the dot products then. Every other reduction reads the whole distance matrix, computed first.
  const bool row_by_row = options.batch_reduce == HardNetBatchReduce::kMin && !options.anchor_swap;

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
  gemm(false, true, n, n, dim, Dtype(1), anchor, dim, positive, dim, Dtype(0), mining.dist, n);
  if (!row_by_row) {
    for (int i = 0; i < n; ++i) dots_to_distances(n, sq_norm_a[i], sq_norm_p, eps, mining.dist + i * nn);
  }
  const Dtype x_threshold = squared_threshold(threshold);
  Dtype* block_min = scratch + 2 * nn;  // row_by_row: one per block of a row

  Dtype loss_sum = Dtype(0);
  int valid_rows = 0;
  for (int i = 0; i < n; ++i) {
    const Dtype* row = mining.dist + i * nn;
    RowMining<Dtype> found;
    Dtype pos;
    if (row_by_row) {
      pos = std::sqrt(squared_distance(sq_norm_a[i], sq_norm_p[i], row[i], eps));
      const SquaredRow<Dtype> squared = {row, sq_norm_a[i], sq_norm_p, labels, i, eps, x_threshold};
      found = hardest_in_row(squared, n, block_min);
    } else {
      pos = row[i];
      found = mine_row(mining.dist, labels, uniforms, n, i, pos, options);
    }
    const Dtype neg = found.candidate.value;
    mining.pos_dist[i] = pos;
    mining.neg_count[i] = found.count;
    mining.neg_index[i] = found.chosen;
    mining.neg_swapped[i] = found.chosen >= 0 && found.candidate.swapped ? 1 : 0;
    mining.neg_dist[i] = found.chosen >= 0 ? neg : Dtype(0);
    Dtype row_loss = Dtype(0), dpos = Dtype(0), dneg = Dtype(0);
    if (found.count > 0) {
      ++valid_rows;
      if (options.batch_reduce == HardNetBatchReduce::kAverage) {
        row_loss = found.average_loss / Dtype(found.count);
        dpos = found.average_dpos / Dtype(found.count);
      } else {
        row_loss = hardnet_row_loss(type, margin, pos, neg);
        dpos = hardnet_row_loss_dpos(type, margin, pos, neg);
        dneg = hardnet_row_loss_dneg(type, margin, pos, neg);
      }
    }
    mining.row_loss[i] = row_loss;
    mining.dloss_dpos[i] = dpos;
    mining.dloss_dneg[i] = dneg;
    loss_sum += row_loss;
  }
  mining.valid_rows[0] = valid_rows;
  *loss = valid_rows > 0 ? loss_sum / Dtype(valid_rows) : Dtype(0);
}

template <typename Dtype>
void hardnet_backward_cpu(int n, int dim, const Dtype* anchor, const Dtype* positive, const Dtype* labels,
                          const HardNetOptions& options, const HardNetMining<Dtype>& mining, Dtype loss_weight,
                          Dtype* scratch, Dtype* anchor_diff, Dtype* positive_diff) {
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
  const Dtype margin = static_cast<Dtype>(options.margin);
  const Dtype threshold = static_cast<Dtype>(options.duplicate_threshold);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      Dtype w;
      if (i == j) {
        w = mining.neg_count[i] > 0 ? mining.dloss_dpos[i] : Dtype(0);
      } else {
        w = hardnet_average_weight(mining.dist, labels, mining.pos_dist, mining.neg_count, n, i, j,
                                   options.loss_type, margin, threshold, options.anchor_swap);
      }
      weight[i * nn + j] = math::safe_div(scale * w, mining.dist[i * nn + j]);
    }
  }
  for (int i = 0; i < n; ++i) row_sum[i] = col_sum[i] = Dtype(0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      row_sum[i] += weight[i * nn + j];
      col_sum[j] += weight[i * nn + j];
    }
  }
  if (anchor_diff != nullptr) {
    for (int i = 0; i < n; ++i) {
      for (int k = 0; k < dim; ++k) anchor_diff[i * static_cast<std::size_t>(dim) + k] =
          row_sum[i] * anchor[i * static_cast<std::size_t>(dim) + k];
    }
    gemm(false, false, n, dim, n, Dtype(-1), weight, n, positive, dim, Dtype(1), anchor_diff, dim);
  }
  if (positive_diff != nullptr) {
    for (int j = 0; j < n; ++j) {
      for (int k = 0; k < dim; ++k) positive_diff[j * static_cast<std::size_t>(dim) + k] =
          col_sum[j] * positive[j * static_cast<std::size_t>(dim) + k];
    }
    gemm(true, false, n, dim, n, Dtype(-1), weight, n, anchor, dim, Dtype(1), positive_diff, dim);
  }
}

template void hardnet_forward_cpu<float>(int, int, const float*, const float*, const float*, const float*,
                                         const HardNetOptions&, const HardNetMining<float>&, float*, float*);
template void hardnet_forward_cpu<double>(int, int, const double*, const double*, const double*, const double*,
                                          const HardNetOptions&, const HardNetMining<double>&, double*, double*);
template void hardnet_backward_cpu<float>(int, int, const float*, const float*, const float*, const HardNetOptions&,
                                          const HardNetMining<float>&, float, float*, float*, float*);
template void hardnet_backward_cpu<double>(int, int, const double*, const double*, const double*,
                                           const HardNetOptions&, const HardNetMining<double>&, double, double*,
                                           double*, double*);

}  // namespace caffe_mining
