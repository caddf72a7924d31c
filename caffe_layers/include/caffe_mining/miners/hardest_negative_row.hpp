// HardNetLoss's row miner on the CPU: row i's hardest (MIN), counted (RANDOM) or averaged (AVERAGE) negative, with
// or without anchor swap, labels and duplicates, from the GEMM's dot products on the squared scale (MIN, RANDOM)
// or from the distance matrix (AVERAGE). The candidate rules it implements are hardnet.hpp's (hardnet_candidate,
// hardnet_harder, hardnet_negative_valid), the ones the CUDA kernels call; this file only finds them faster.
// CPU only, included by hardnet.cpp and hardest_negative_row.cpp (the float scan's SSE2/AVX2 lanes).
#ifndef CAFFE_MINING_MINERS_HARDEST_NEGATIVE_ROW_HPP_
#define CAFFE_MINING_MINERS_HARDEST_NEGATIVE_ROW_HPP_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "caffe_mining/distances/dot_distance.hpp"
#include "caffe_mining/hardnet.hpp"

namespace caffe_mining {
namespace row_miner {

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

// The squared-scale helpers (squared_distance_from_dot, squared_threshold, largest_with_same_root) are
// distances/dot_distance.hpp's, shared with the CUDA path.

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

  Dtype x(int j) const { return squared_distance_from_dot(sq_norm_a, sq_norm_p[j], dots[j], eps); }
  bool valid(int j, Dtype x_j) const {
    return !(x_j < x_threshold) && allowed(j);
  }
  // Whether the diagonal and the labels allow column j (valid unless it is a duplicate).
  bool allowed(int j) const { return hardnet_column_allowed(labels, i, j); }
};

// What a block of columns holds: the smallest x among its valid entries (infinity if none) and their number.
template <typename Dtype>
struct BlockMinimum {
  Dtype x_min;
  int count;
};

// Anchor swap without the distance matrix: entry (r, c) is also the swapped value D_rc of row c's candidate r, so
// column c holds row c's swapped values. While the rows are scanned in increasing r, each column keeps what rows
// 0..r gave it: its number of duplicates (entries the diagonal and the labels allow, below the duplicate threshold)
// and, for MIN, its smallest valid x and the lowest row whose D = sqrt(x) is the column's smallest. Counts and rows
// are held as Dtype (exact integers: n <= hardnet_max_rows < 2^24) so that the scratch keeps one element type.
template <typename Dtype>
struct ColumnScan {
  Dtype* duplicates;  // [n]
  Dtype* x_min;       // [n] infinity while the column has no valid entry; null when only counting (RANDOM)
  Dtype* first_row;   // [n]
};

// A valid entry (r, c) below the column's smallest x. D = sqrt(x) is non-decreasing in x, so its root is at most the
// column's smallest D; only a strictly smaller root moves the column's first row (equal D: the lower row stays).
template <typename Dtype>
inline void lower_column_minimum(const ColumnScan<Dtype>& cols, int r, int c, Dtype x) {
  if (std::sqrt(x) < std::sqrt(cols.x_min[c])) cols.first_row[c] = Dtype(r);
  cols.x_min[c] = x;
}

// Columns [start, end) of a row, one at a time; also the tails of the vector versions. With `cols`, each entry is
// also entered into its column.
template <typename Dtype>
BlockMinimum<Dtype> block_minimum_scalar(const SquaredRow<Dtype>& row, int start, int end,
                                         const ColumnScan<Dtype>* cols) {
  BlockMinimum<Dtype> block = {std::numeric_limits<Dtype>::infinity(), 0};
  for (int j = start; j < end; ++j) {
    const Dtype x = row.x(j);
    const bool valid = row.valid(j, x);
    if (cols != nullptr) {
      if (valid) {
        if (cols->x_min != nullptr && x < cols->x_min[j]) lower_column_minimum(*cols, row.i, j, x);
      } else if (row.allowed(j)) {
        cols->duplicates[j] += Dtype(1);
      }
    }
    if (!valid) continue;
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

// Row i's columns in blocks of kHardnetRowBlock: block_min[b] (unless null) the smallest valid x of block b,
// infinity if none; returns the row's smallest valid x and its number of valid columns. With `cols` each entry is
// also entered into its column.
template <typename Dtype>
BlockMinimum<Dtype> scan_row(const SquaredRow<Dtype>& row, int n, Dtype* block_min, const ColumnScan<Dtype>* cols) {
  BlockMinimum<Dtype> whole = {std::numeric_limits<Dtype>::infinity(), 0};
  for (int start = 0, b = 0; start < n; start += kHardnetRowBlock, ++b) {
    const BlockMinimum<Dtype> block = block_minimum_scalar(row, start, std::min(start + kHardnetRowBlock, n), cols);
    if (block_min != nullptr) block_min[b] = block.x_min;
    whole.count += block.count;
    if (block.x_min < whole.x_min) whole.x_min = block.x_min;
  }
  return whole;
}
template <typename Dtype>
int first_at_most(const SquaredRow<Dtype>& row, int start, int end, Dtype x_bound) {
  return first_at_most_scalar(row, start, end, x_bound);
}

#if defined(__SSE2__)
// The float scan runs in vector lanes (src/caffe/mining/hardest_negative_row.cpp): the same decisions, bit for bit.
template <>
BlockMinimum<float> scan_row<float>(const SquaredRow<float>& row, int n, float* block_min,
                                    const ColumnScan<float>* cols);
template <>
int first_at_most<float>(const SquaredRow<float>& row, int start, int end, float x_bound);
#endif

// Row i's hardest negative. The row is scanned in blocks, keeping each block's minimum (block_min, one per block);
// the chosen column is then the lowest valid one whose x has the row's minimum square root (hardnet_harder's
// order on D), searched only in the blocks that can hold one. With `cols` the scan also enters the row into the
// columns (anchor swap).
template <typename Dtype>
RowMining<Dtype> hardest_in_row(const SquaredRow<Dtype>& row, int n, Dtype* block_min, const ColumnScan<Dtype>* cols) {
  RowMining<Dtype> found;
  const BlockMinimum<Dtype> whole = scan_row(row, n, block_min, cols);
  const Dtype x_min = whole.x_min;
  found.count = whole.count;
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

// The number of valid entries of row i (RANDOM), with the same scan.
template <typename Dtype>
int valid_in_row(const SquaredRow<Dtype>& row, int n, const ColumnScan<Dtype>* cols) {
  return scan_row(row, n, static_cast<Dtype*>(nullptr), cols).count;
}

// The number of columns j that the labels and the diagonal allow for row i (j != i, another label): with no
// duplicate in its row, or none in its column, that is count_i (both directions are subsets of these columns).
template <typename Dtype>
int eligible_in_row(const Dtype* labels, int n, int i) {
  if (labels == nullptr) return n - 1;
  int allowed = 0;
  for (int j = 0; j < n; ++j) allowed += hardnet_column_allowed(labels, i, j) ? 1 : 0;
  return allowed;
}

// The rank-th (0-based) column that the labels and the diagonal allow for row i; rank < eligible_in_row.
template <typename Dtype>
int eligible_at_rank(const Dtype* labels, int n, int i, int rank) {
  if (labels == nullptr) return rank < i ? rank : rank + 1;
  for (int j = 0; j < n; ++j) {
    if (hardnet_column_allowed(labels, i, j) && rank-- == 0) return j;
  }
  return -1;  // not reached
}

// Where the matrix holds the GEMM's dot products (MIN and RANDOM): candidate j of row i from distance_from_dot of
// entries (i, j) and (j, i), the values the distance matrix would hold.
template <typename Dtype>
struct DotMatrix {
  const Dtype* dots;
  const Dtype* sq_norm_a;
  const Dtype* sq_norm_p;
  const Dtype* labels;
  int n;
  Dtype eps, threshold;

  Dtype distance(int i, int j) const {
    return distance_from_dot(sq_norm_a[i], sq_norm_p[j], dots[static_cast<std::size_t>(i) * n + j], eps);
  }
  HardNetCandidate<Dtype> candidate(int i, int j, bool swap) const {
    const Dtype d_ij = distance(i, j);
    const bool valid_ij = hardnet_negative_valid(labels, i, j, d_ij, threshold);
    if (!swap) return hardnet_candidate_of(d_ij, valid_ij, d_ij, false, false);
    const Dtype d_ji = distance(j, i);
    return hardnet_candidate_of(d_ij, valid_ij, d_ji, hardnet_negative_valid(labels, j, i, d_ji, threshold), true);
  }
};

// RANDOM: the rank-th valid candidate of row i, from the candidates one by one (rows holding duplicates).
template <typename Dtype>
int valid_at_rank(const DotMatrix<Dtype>& matrix, int i, int rank, bool swap) {
  for (int j = 0; j < matrix.n; ++j) {
    const HardNetCandidate<Dtype> cand = matrix.candidate(i, j, swap);
    if (cand.valid && rank-- == 0) return j;
  }
  return -1;  // not reached
}

// count_i with anchor swap, from the candidates one by one (rows with duplicates in both directions).
template <typename Dtype>
int valid_candidates(const DotMatrix<Dtype>& matrix, int i) {
  int count = 0;
  for (int j = 0; j < matrix.n; ++j) count += matrix.candidate(i, j, true).valid ? 1 : 0;
  return count;
}

// MIN with anchor swap: row i's hardest candidate from its row's minimum (value row_min at the lowest column
// row_first) and its column's (the swapped values: value col_min at the lowest row col_first). Candidate j's value is
// the smaller of its two, so the row's smallest candidate value is the smaller minimum, and the lowest j reaching it
// is the lower of the two firsts that reach it; that candidate is swapped unless its own D_ij reaches it too.
template <typename Dtype>
void hardest_with_swap(int row_count, int row_first, Dtype row_min, int col_count, int col_first, Dtype col_min,
                       RowMining<Dtype>* found) {
  const bool from_row = row_count > 0 && (col_count == 0 || !(col_min < row_min));
  const bool from_col = col_count > 0 && (row_count == 0 || !(row_min < col_min));
  if (from_row && (!from_col || row_first <= col_first)) {
    found->chosen = row_first;
    found->candidate = {row_min, true, false};
  } else if (from_col) {
    found->chosen = col_first;
    found->candidate = {col_min, true, true};
  }
}

// AVERAGE: row i's candidates from the distance matrix, each read with hardnet_candidate: their number, the hardest
// (reported in the second top) and the sums of the row loss and its derivative over them, in increasing j. From
// column `start` on, continuing `found` (what columns [0, start) gave).
template <typename Dtype>
RowMining<Dtype> average_row(const Dtype* dist, const Dtype* labels, int n, int i, Dtype pos,
                             const HardNetOptions& options, int start = 0, RowMining<Dtype> found = {}) {
  const Dtype margin = static_cast<Dtype>(options.margin);
  const Dtype threshold = static_cast<Dtype>(options.duplicate_threshold);
  const HardNetLossType type = options.loss_type;
  for (int j = start; j < n; ++j) {
    const HardNetCandidate<Dtype> cand = hardnet_candidate(dist, labels, n, i, j, threshold, options.anchor_swap);
    if (!cand.valid) continue;
    ++found.count;
    if (hardnet_harder(cand.value, j, found.candidate.value, found.chosen)) {
      found.chosen = j;
      found.candidate = cand;
    }
    found.average_loss += hardnet_row_loss(type, margin, pos, cand.value);
    found.average_dpos += hardnet_row_loss_dpos(type, margin, pos, cand.value);
  }
  return found;
}

/// The float scan's lane count on this CPU: 8 (AVX2), 4 (SSE2; also with CAFFE_MINING_CPU_LANES=sse2) or 1.
int row_scan_lanes();

}  // namespace row_miner
}  // namespace caffe_mining

#endif  // CAFFE_MINING_MINERS_HARDEST_NEGATIVE_ROW_HPP_
