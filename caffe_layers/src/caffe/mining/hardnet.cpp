// CPU implementation of the HardNet loss core (see caffe_mining/hardnet.hpp for the math and the contracts).
#include "caffe_mining/hardnet.hpp"

#include <cblas.h>

#include <cstring>

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

template <typename Dtype>
void squared_norms(int n, int dim, const Dtype* x, Dtype* sq_norm) {
  for (int i = 0; i < n; ++i) {
    const Dtype* row = x + static_cast<std::size_t>(i) * dim;
    Dtype sum = Dtype(0);
    for (int k = 0; k < dim; ++k) sum += row[k] * row[k];
    sq_norm[i] = sum;
  }
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
  const bool swap = options.anchor_swap;
  const HardNetLossType type = options.loss_type;

  // D = A * P^T, then element-wise into distances.
  Dtype* sq_norm_a = scratch;
  Dtype* sq_norm_p = scratch + nn;
  squared_norms(n, dim, anchor, sq_norm_a);
  squared_norms(n, dim, positive, sq_norm_p);
  gemm(false, true, n, n, dim, Dtype(1), anchor, dim, positive, dim, Dtype(0), mining.dist, n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      Dtype& d = mining.dist[i * nn + j];
      d = hardnet_distance(sq_norm_a[i], sq_norm_p[j], d, eps);
    }
  }

  Dtype loss_sum = Dtype(0);
  int valid_rows = 0;
  for (int i = 0; i < n; ++i) {
    const Dtype pos = mining.dist[i * nn + i];
    mining.pos_dist[i] = pos;
    // One pass: count, hardest, and the AVERAGE sums.
    int count = 0;
    int hardest = -1;
    HardNetCandidate<Dtype> hardest_cand = {Dtype(0), false, false};
    Dtype average_loss = Dtype(0), average_dpos = Dtype(0);
    for (int j = 0; j < n; ++j) {
      const HardNetCandidate<Dtype> cand = hardnet_candidate(mining.dist, labels, n, i, j, threshold, swap);
      if (!cand.valid) continue;
      ++count;
      if (hardnet_harder(cand.value, j, hardest_cand.value, hardest)) {
        hardest = j;
        hardest_cand = cand;
      }
      if (options.batch_reduce == HardNetBatchReduce::kAverage) {
        average_loss += hardnet_row_loss(type, margin, pos, cand.value);
        average_dpos += hardnet_row_loss_dpos(type, margin, pos, cand.value);
      }
    }
    int chosen = hardest;
    HardNetCandidate<Dtype> chosen_cand = hardest_cand;
    if (options.batch_reduce == HardNetBatchReduce::kRandom && count > 0) {
      int rank = hardnet_random_rank(uniforms[i], count);
      for (int j = 0; j < n; ++j) {
        const HardNetCandidate<Dtype> cand = hardnet_candidate(mining.dist, labels, n, i, j, threshold, swap);
        if (cand.valid && rank-- == 0) {
          chosen = j;
          chosen_cand = cand;
          break;
        }
      }
    }
    mining.neg_count[i] = count;
    mining.neg_index[i] = chosen;
    mining.neg_swapped[i] = chosen >= 0 && chosen_cand.swapped ? 1 : 0;
    mining.neg_dist[i] = chosen >= 0 ? chosen_cand.value : Dtype(0);
    Dtype row_loss = Dtype(0), dpos = Dtype(0), dneg = Dtype(0);
    if (count > 0) {
      ++valid_rows;
      if (options.batch_reduce == HardNetBatchReduce::kAverage) {
        row_loss = average_loss / Dtype(count);
        dpos = average_dpos / Dtype(count);
      } else {
        row_loss = hardnet_row_loss(type, margin, pos, chosen_cand.value);
        dpos = hardnet_row_loss_dpos(type, margin, pos, chosen_cand.value);
        dneg = hardnet_row_loss_dneg(type, margin, pos, chosen_cand.value);
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
