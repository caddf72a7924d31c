// CPU implementation of the HardNet loss core (see caffe_mining/hardnet.hpp for the math and the contracts).
#include "caffe_mining/hardnet.hpp"

#include <cblas.h>

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

// |x_i|^2 of each row with BLAS's dot: a plain loop's float sum does not vectorize (it would reorder the sum), and
// at small n the norms cost a visible share of the GEMM's time.
inline float dot_self(int dim, const float* x) { return cblas_sdot(dim, x, 1, x, 1); }
inline double dot_self(int dim, const double* x) { return cblas_ddot(dim, x, 1, x, 1); }

template <typename Dtype>
void squared_norms(int n, int dim, const Dtype* x, Dtype* sq_norm) {
  for (int i = 0; i < n; ++i) sq_norm[i] = dot_self(dim, x + static_cast<std::size_t>(i) * dim);
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

// Row i of the GEMM's dot products a_i.p_j turned into D_ij: hardnet_distance, in two passes so that the square
// roots run vectorized (same operations in the same order, so the same values).
template <typename Dtype>
void dots_to_distances(int n, Dtype sq_norm_a, const Dtype* sq_norm_p, Dtype eps, Dtype* row) {
  for (int j = 0; j < n; ++j) {
    const Dtype sq = sq_norm_a + sq_norm_p[j] - Dtype(2) * row[j];
    row[j] = (sq > Dtype(0) ? sq : Dtype(0)) + eps;  // clamped as in hardnet_distance
  }
  sqrt_in_place(n, row);
}

// Order-preserving integer key of a distance: a non-negative IEEE value's bit pattern, read as an unsigned integer,
// grows with the value (and equal keys are equal values). Integer minimum reductions vectorize; float ones do not
// (NaN and signed-zero rules).
inline std::uint32_t distance_key(float d) {
  std::uint32_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  return bits;
}
inline std::uint64_t distance_key(double d) {
  std::uint64_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  return bits;
}

// What the mining of one row found.
template <typename Dtype>
struct RowMining {
  int count = 0;                                                  // number of valid candidates
  int chosen = -1;                                                // column of the chosen candidate, -1 if none
  HardNetCandidate<Dtype> candidate = {Dtype(0), false, false};  // its value and whether it is swapped
  Dtype average_loss = Dtype(0), average_dpos = Dtype(0);         // AVERAGE: sums over the valid candidates
};

// MIN without anchor swap (the default): row i's candidates are D_ij alone, so the row is mined by itself, with
// the same rule as hardnet_negative_valid and the same choice as hardnet_harder (lowest j at equal value).
// Branch-free over blocks of columns so that it vectorizes: a block replaces the best one only when its minimum is
// strictly smaller, so the first block holding the row's minimum is kept, and only from there is the first column
// holding it searched.
template <typename Dtype, bool kLabels>
RowMining<Dtype> hardest_in_row(const Dtype* row, const Dtype* labels, int n, int i, Dtype threshold) {
  typedef decltype(distance_key(Dtype(0))) Key;
  const int kBlock = 64;
  const Key kNone = std::numeric_limits<Key>::max();
  const Dtype label_i = kLabels ? labels[i] : Dtype(0);
  const auto valid = [&](int j) {  // `!(d < threshold)` as in hardnet_negative_valid, NaN included
    return (j != i) & !(row[j] < threshold) & (!kLabels || labels[j] != label_i);
  };
  RowMining<Dtype> found;
  Key best = kNone;
  int best_block = 0;
  for (int start = 0; start < n; start += kBlock) {
    const int end = start + kBlock < n ? start + kBlock : n;
    Key block_best = kNone;
    for (int j = start; j < end; ++j) {
      const bool is_valid = valid(j);
      const Key key = distance_key(row[j]) | (static_cast<Key>(is_valid) - 1);  // invalid: all ones = kNone
      block_best = key < block_best ? key : block_best;
      found.count += is_valid;
    }
    if (block_best < best) {
      best = block_best;
      best_block = start;
    }
  }
  if (found.count == 0) return found;
  for (int j = best_block; j < n; ++j) {
    if (valid(j) && distance_key(row[j]) == best) {
      found.chosen = j;
      found.candidate = {row[j], true, false};
      return found;
    }
  }
  // Not reached for distances (non-negative or NaN): a valid column of that block has key `best`.
  return found;
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

// target_row += coeff * (a - p) over dim values.
template <typename Dtype>
void add_scaled_difference(int dim, Dtype coeff, const Dtype* a, const Dtype* p, Dtype* target_row) {
  if (target_row == nullptr || coeff == Dtype(0)) return;
  for (int k = 0; k < dim; ++k) target_row[k] += coeff * (a[k] - p[k]);
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
  // MIN without anchor swap mines each row from that row alone: then it is turned into distances and mined right
  // away, while it is in cache. Every other reduction reads the whole matrix, computed first.
  const bool row_by_row = options.batch_reduce == HardNetBatchReduce::kMin && !options.anchor_swap;

  // D = A * P^T, then element-wise into distances.
  Dtype* sq_norm_a = scratch;
  Dtype* sq_norm_p = scratch + nn;
  squared_norms(n, dim, anchor, sq_norm_a);
  squared_norms(n, dim, positive, sq_norm_p);
  gemm(false, true, n, n, dim, Dtype(1), anchor, dim, positive, dim, Dtype(0), mining.dist, n);
  if (!row_by_row) {
    for (int i = 0; i < n; ++i) dots_to_distances(n, sq_norm_a[i], sq_norm_p, eps, mining.dist + i * nn);
  }

  Dtype loss_sum = Dtype(0);
  int valid_rows = 0;
  for (int i = 0; i < n; ++i) {
    Dtype* row = mining.dist + i * nn;
    RowMining<Dtype> found;
    if (row_by_row) {
      dots_to_distances(n, sq_norm_a[i], sq_norm_p, eps, row);
      found = labels == nullptr ? hardest_in_row<Dtype, false>(row, labels, n, i, threshold)
                                : hardest_in_row<Dtype, true>(row, labels, n, i, threshold);
    } else {
      found = mine_row(mining.dist, labels, uniforms, n, i, row[i], options);
    }
    const Dtype pos = row[i];
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
  if (anchor_diff != nullptr) std::memset(anchor_diff, 0, elements * sizeof(Dtype));
  if (positive_diff != nullptr) std::memset(positive_diff, 0, elements * sizeof(Dtype));
  const int valid_rows = mining.valid_rows[0];
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
      const Dtype pos_coeff = hardnet_safe_div(scale * mining.dloss_dpos[i], mining.pos_dist[i]);
      add_scaled_difference(dim, pos_coeff, a_i, p_i, da_i);
      add_scaled_difference(dim, -pos_coeff, a_i, p_i, dp_i);
      const int j = mining.neg_index[i];
      const Dtype neg_coeff = hardnet_safe_div(scale * mining.dloss_dneg[i], mining.neg_dist[i]);
      const Dtype* a_j = anchor + j * static_cast<std::size_t>(dim);
      const Dtype* p_j = positive + j * static_cast<std::size_t>(dim);
      if (mining.neg_swapped[i]) {  // value D_ji = d(a_j, p_i)
        add_scaled_difference(dim, neg_coeff, a_j, p_i, anchor_diff ? anchor_diff + j * static_cast<std::size_t>(dim)
                                                                    : nullptr);
        add_scaled_difference(dim, -neg_coeff, a_j, p_i, dp_i);
      } else {  // value D_ij = d(a_i, p_j)
        add_scaled_difference(dim, neg_coeff, a_i, p_j, da_i);
        add_scaled_difference(dim, -neg_coeff, a_i, p_j,
                              positive_diff ? positive_diff + j * static_cast<std::size_t>(dim) : nullptr);
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
      weight[i * nn + j] = hardnet_safe_div(scale * w, mining.dist[i * nn + j]);
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
