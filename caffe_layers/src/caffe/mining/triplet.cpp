// CPU implementation of the TripletLoss core (see caffe_mining/triplet.hpp for the math and the contracts).
// The AVX2 lanes hand 32-byte vectors to the kit's element-wise templates (soft_margin_term), which are always
// inlined: no such vector crosses a call, so GCC's note that AVX passes them differently does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#include "caffe_mining/triplet.hpp"
#include "caffe_mining/common/cpu_lanes.hpp"
#include "caffe_mining/common/float_lanes.hpp"  // CAFFE_MINING_AVX2_LANES where GCC can target AVX2
#include "caffe_mining/distances/gemm_distances.hpp"
#include "caffe_mining/distances/squared_norm.hpp"
#include "caffe_mining/gradients/distance_gradients.hpp"
#include "caffe_mining/miners/class_members.hpp"

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

namespace sse2_lanes {
constexpr int kLaneBytes = 16;
#include "triplet_lanes.inc"
}  // namespace sse2_lanes
#if defined(CAFFE_MINING_AVX2_LANES)
#pragma GCC push_options
#pragma GCC target("avx2")  // not "fma": no contraction, the same bits as the 16-byte lanes
namespace avx2_lanes {
constexpr int kLaneBytes = 32;
#include "triplet_lanes.inc"
}  // namespace avx2_lanes
#pragma GCC pop_options
// triplet_lanes.inc's `function` at the widest width the CPU allows (common/cpu_lanes.hpp).
#define CM_TRIPLET_LANES(function, ...) \
  (cpu_lanes_allow_avx2() ? avx2_lanes::function(__VA_ARGS__) : sse2_lanes::function(__VA_ARGS__))
#else
#define CM_TRIPLET_LANES(function, ...) sse2_lanes::function(__VA_ARGS__)
#endif

// triplet_anchor_step by the CPU's lane scans (same outputs to the bit; the GPU runs
// triplet_anchor_step, and tests/emulation/triplet_gpu_emulation.cpp compares the two).
template <typename Dtype>
void anchor_step_cpu(TripletMiner miner, const TripletRowLoss<Dtype>& term, int n, int a, const Dtype* labels,
                     const ClassMembers& members, const TripletMining<Dtype>& mining) {
  if (miner == TripletMiner::kSemiHard) {
    CM_TRIPLET_LANES(semi_hard_anchor_cpu, term, n, a, labels, members, mining);
  } else if (miner == TripletMiner::kBatchAll && !term.soft) {
    CM_TRIPLET_LANES(batch_all_anchor_cpu<false>, term.margin, n, a, labels, members, mining);
  } else if (miner == TripletMiner::kBatchAll) {
    CM_TRIPLET_LANES(batch_all_anchor_cpu<true>, term.margin, n, a, labels, members, mining);
  } else {
    CM_TRIPLET_LANES(batch_hard_anchor_cpu, term, n, a, labels, members, mining);
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
      add_distance_gradient(dim, w, xi, x + j * static_cast<std::size_t>(dim), out, static_cast<Dtype*>(nullptr));
    }
    row_sum[i] = sum;
  }
}

// mined_gradient_weights + sparse_gradient without the n x n matrix S: S's entries at the picks and their mirrors
// (the only ones that can be non-zero), gathered row by row (a counting sort in `space`, `capacity` ints) and
// visited in increasing column, each the same triplet_gradient_weight (symmetric to the bit) and the same sums in
// the same order. SEMI_HARD's picks are read at its positive pairs only (pair_negative is n x n). Returns false,
// having written nothing but `space`, when they do not fit.
template <typename Dtype>
bool sparse_mined_gradient(TripletMiner miner, int n, int dim, const Dtype* x, const TripletMining<Dtype>& mining,
                           const ClassMembers& members, Dtype scale, bool squared, int* space, std::size_t capacity,
                           Dtype* row_sum, Dtype* grad) {
  const std::size_t rows = static_cast<std::size_t>(n);
  if (capacity < 2 * rows + 1) return false;
  int* start = space;            // [n + 1]: row i's entries are columns[start[i] .. start[i + 1])
  int* next = start + rows + 1;  // [n]: the filling cursors
  int* columns = next + rows;    // [2 picks], then the picks themselves as (a, j) pairs [2 picks]
  const std::size_t room = capacity - (2 * rows + 1);
  std::fill(start, start + rows + 1, 0);
  std::size_t picks = 0;
  auto add = [&](int a, int j) {
    if (4 * (picks + 1) > room) return false;
    columns[room - 2 * picks - 2] = a;  // the pairs fill `room` from its end
    columns[room - 2 * picks - 1] = j;
    ++picks;
    ++start[a + 1];
    ++start[j + 1];
    return true;
  };
  for (int a = 0; a < n; ++a) {
    if (miner == TripletMiner::kBatchHard) {
      if (mining.positive[a] < 0) continue;
      if (!add(a, mining.positive[a]) || !add(a, mining.negative[a])) return false;
    } else {  // a's positive pairs: its class's rows, in increasing index
      const int* pair_row = mining.pair_negative + a * rows;
      Positives positives(members, a);
      for (int p; positives.take(&p, 1) == 1;) {
        if (pair_row[p] >= 0 && (!add(a, p) || !add(a, pair_row[p]))) return false;
      }
    }
  }
  for (int i = 0; i < n; ++i) start[i + 1] += start[i];
  std::copy(start, start + rows, next);
  for (std::size_t k = 0; k < picks; ++k) {  // the 2 picks columns lie below the pairs (4 picks <= room)
    const int a = columns[room - 2 * k - 2], j = columns[room - 2 * k - 1];
    columns[next[a]++] = j;
    columns[next[j]++] = a;
  }
  for (int i = 0; i < n; ++i) {
    int* first = columns + start[i];
    int* end = columns + start[i + 1];
    std::sort(first, end);
    int* last = std::unique(first, end);
    Dtype* out = grad + i * static_cast<std::size_t>(dim);
    const Dtype* xi = x + i * static_cast<std::size_t>(dim);
    std::fill(out, out + dim, Dtype(0));
    Dtype sum = Dtype(0);
    for (const int* j = first; j != last; ++j) {
      const Dtype w = triplet_gradient_weight(mining.dist, mining.weight, n, i, *j, scale, squared);
      if (w == Dtype(0)) continue;
      sum += w;
      add_distance_gradient(dim, w, xi, x + *j * static_cast<std::size_t>(dim), out, static_cast<Dtype*>(nullptr));
    }
    row_sum[i] = sum;
  }
  return true;
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
  const ClassMembers members = class_members(n, labels, triplet_class_space(n, scratch));
  for (int a = 0; a < n; ++a) {
    anchor_step_cpu(options.mining, term, n, a, labels, members, mining);
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
    // S's region holds the picks' entries (ints) when they fit; else S itself.
    const ClassMembers members = class_members_in(n, triplet_class_space(n, scratch));  // the forward's
    if (!sparse_mined_gradient(options.mining, n, dim, embedding, mining, members, scale, options.squared,
                               reinterpret_cast<int*>(s), nn * nn * sizeof(Dtype) / sizeof(int), row_sum,
                               embedding_diff)) {
      mined_gradient_weights(options.mining, n, mining, scale, options.squared, s);
      sparse_gradient(n, dim, embedding, s, row_sum, embedding_diff);
    }
    return;
  }
  CM_TRIPLET_LANES(gradient_weights, n, mining.dist, mining.weight, scale, options.squared, s, row_sum);
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

#undef CM_TRIPLET_LANES

}  // namespace caffe_mining
