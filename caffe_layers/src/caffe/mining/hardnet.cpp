// CPU implementation of the HardNet loss core (see caffe_mining/hardnet.hpp for the math and the contracts).
#include "caffe_mining/hardnet.hpp"
#include "caffe_mining/common/cpu_lanes.hpp"
#include "caffe_mining/common/float_lanes.hpp"
#include "caffe_mining/distances/gemm_distances.hpp"
#include "caffe_mining/gradients/distance_gradients.hpp"
#include "caffe_mining/miners/hardest_negative_row.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

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

// Where AVERAGE's backward starts the weight matrix V in the workspace: 2 KB + 128 bytes past the distance matrix's
// offset in a 4 KB page. The backward stores rows of V while it loads the next rows of D at the same columns; where
// the two share their offsets in a page (malloc'd buffers and n a multiple of 1024; other powers of two for some
// rows), each such load waits on the store before it (4K aliasing), 0.15 of one SGEMM at n = 1024. An odd multiple
// of 128 bytes is never within a vector of a row's offset in a page when n is a power of two.
template <typename Dtype>
Dtype* weight_apart_from(Dtype* scratch, const Dtype* dist) {
  constexpr std::uintptr_t kPage = 4096, kApart = 2048 + 128;
  static_assert(kPage <= kHardnetPagePad * sizeof(float), "the workspace leaves room for the shift");
  const std::uintptr_t offset =
      (reinterpret_cast<std::uintptr_t>(scratch) - reinterpret_cast<std::uintptr_t>(dist)) % kPage;
  return scratch + (kApart + kPage - offset) % kPage / sizeof(Dtype);
}

// The rows of a dot-product matrix turned into distances (dots_to_distances) when the AVERAGE lanes reach them, or
// nothing where the whole matrix was turned first (`pending` false).
template <typename Dtype>
struct RowsToDistances {
  int n;
  const Dtype* sq_norm_a;
  const Dtype* sq_norm_p;
  Dtype eps;
  bool pending;
  void convert(int i, Dtype* row) const {
    if (pending) dots_to_distances(n, sq_norm_a[i], sq_norm_p, eps, row);
  }
};

// AVERAGE in float vector lanes (hardnet_average_lanes.inc): TRIPLET_MARGIN and CONTRASTIVE. SOFTMAX, double, and
// the rows the lanes leave take average_row and average_weight_at.
template <typename Dtype>
int average_forward_lanes(const Dtype*, int, const HardNetOptions&, const HardNetMining<Dtype>&,
                          const RowsToDistances<Dtype>&, Dtype*, Dtype*, int*) {
  return 0;
}
template <typename Dtype>
int average_backward_lanes(const Dtype*, const HardNetOptions&, const HardNetMining<Dtype>&, int, Dtype, Dtype*,
                           Dtype*, Dtype*) {
  return 0;
}

#if defined(__SSE2__)
#define CM_LANES_INC "hardnet_average_lanes.inc"
#include "lane_widths.inc"

inline bool average_has_lanes(const HardNetOptions& options) {
  return options.loss_type == HardNetLossType::kTripletMargin || options.loss_type == HardNetLossType::kContrastive;
}

// `workspace`: 7 n floats the forward may use (with anchor swap).
template <>
int average_forward_lanes<float>(const float* labels, int n, const HardNetOptions& options,
                                 const HardNetMining<float>& mining, const RowsToDistances<float>& distances,
                                 float* workspace, float* loss_sum, int* valid_rows) {
  if (!average_has_lanes(options)) return 0;
#if defined(CAFFE_MINING_AVX2_LANES)
  if (cpu_lanes_allow_avx2()) {
    return avx2_lanes::average_forward_lanes(labels, n, options, mining, distances, workspace, loss_sum, valid_rows);
  }
#endif
  return sse2_lanes::average_forward_lanes(labels, n, options, mining, distances, workspace, loss_sum, valid_rows);
}

template <>
int average_backward_lanes<float>(const float* labels, const HardNetOptions& options,
                                  const HardNetMining<float>& mining, int n, float scale, float* weight,
                                  float* row_sum, float* col_sum) {
  if (!average_has_lanes(options)) return 0;
#if defined(CAFFE_MINING_AVX2_LANES)
  if (cpu_lanes_allow_avx2()) {
    return avx2_lanes::average_backward_lanes(labels, options, mining, n, scale, weight, row_sum, col_sum);
  }
#endif
  return sse2_lanes::average_backward_lanes(labels, options, mining, n, scale, weight, row_sum, col_sum);
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
    // AVERAGE reads every candidate, and its backward the whole distance matrix. With anchor swap a row reads its
    // column too, so the matrix is turned into distances first; without, the lanes turn each block of rows as they
    // reach it, and the rows they leave are turned here.
    RowsToDistances<Dtype> distances{n, sq_norm_a, sq_norm_p, eps, !swap};
    if (swap) {
      for (int i = 0; i < n; ++i) dots_to_distances(n, sq_norm_a[i], sq_norm_p, eps, mining.dist + i * nn);
    }
    int i = average_forward_lanes(labels, n, options, mining, distances, scratch + 2 * nn, &loss_sum, &valid_rows);
    for (; i < n; ++i) {
      distances.convert(i, mining.dist + i * nn);
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
  const bool dense = options.batch_reduce == HardNetBatchReduce::kAverage && valid_rows > 0;
  if (!dense) {  // AVERAGE's dense gradient writes every element itself
    if (anchor_diff != nullptr) std::memset(anchor_diff, 0, elements * sizeof(Dtype));
    if (positive_diff != nullptr) std::memset(positive_diff, 0, elements * sizeof(Dtype));
  }
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
  Dtype* weight = weight_apart_from(scratch, mining.dist);  // V, n x n
  Dtype* row_sum = weight + nn * nn;
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
