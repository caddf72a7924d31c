// CPU implementation of the margin loss core (see caffe_mining/margin.hpp for the math and the contracts): the
// shared steps of margin.hpp in loops, in the order the GPU's threads and serial sums follow.
#include "caffe_mining/margin.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace caffe_mining {

namespace {

template <typename Dtype>
bool all_finite(std::size_t count, const Dtype* x) {
  for (std::size_t k = 0; k < count; ++k) {
    if (!std::isfinite(x[k])) return false;
  }
  return true;
}

}  // namespace

template <typename Dtype>
void margin_forward_cpu(int n, int dim, const Dtype* embedding, const Dtype* labels, const Dtype* beta,
                        const MarginOptions& options, uint64_t iteration, int capacity,
                        const MarginMining<Dtype>& mining, void* workspace, Dtype* loss) {
  const std::size_t rows = static_cast<std::size_t>(n);
  const int betas = options.num_classes > 0 ? options.num_classes : 1;
  Dtype* dist = static_cast<Dtype*>(workspace);
  double* cumulative =
      reinterpret_cast<double*>(static_cast<char*>(workspace) + margin_workspace_offset<Dtype>(n, 1));
  bool finite = all_finite(rows * dim, embedding) && all_finite(static_cast<std::size_t>(betas), beta);
  const Dtype eps = static_cast<Dtype>(options.eps);
  for (int i = 0; finite && i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      // d_ij and d_ji are the same bits (the squares of x_i - x_j and x_j - x_i are equal): computed once.
      const Dtype d = j < i ? dist[static_cast<std::size_t>(j) * n + i] : margin_distance(dim, embedding, i, j, eps);
      if (!std::isfinite(d)) finite = false;
      dist[static_cast<std::size_t>(i) * n + j] = d;
    }
  }
  if (!finite) {
    for (int i = 0; i < n; ++i) mining.anchor_count[i] = mining.anchor_offset[i] = 0;
    mining.counts[0] = -1;
    mining.counts[1] = 0;
    *loss = std::numeric_limits<Dtype>::quiet_NaN();
    return;
  }
  int offset = 0;
  for (int i = 0; i < n; ++i) {
    int count = 0;
    const double total = margin_anchor_row(n, dim, i, dist, labels, options.sampler, options.cutoff,
                                           options.nonzero_loss_cutoff, options.negatives_per_positive, cumulative,
                                           &count);
    mining.anchor_count[i] = count;
    mining.anchor_offset[i] = offset;
    if (count > 0) {
      if (offset + count > capacity) {  // the caller's capacity is from other labels: never write past it
        count = mining.anchor_count[i] = 0;
      } else {
        margin_anchor_draws(n, i, dist, labels, cumulative, total, options.negatives_per_positive, options.seed,
                            iteration, offset, mining.triplets, mining.pos_dist, mining.neg_dist);
      }
    }
    offset += count;
  }
  mining.counts[0] = offset;
  *loss = margin_loss_value(offset, mining.triplets, mining.pos_dist, mining.neg_dist, beta, labels,
                            options.num_classes, static_cast<Dtype>(options.margin), static_cast<Dtype>(options.nu),
                            &mining.counts[1]);
}

template <typename Dtype>
void margin_backward_cpu(int n, int dim, const Dtype* embedding, const Dtype* labels, const Dtype* beta,
                         const MarginOptions& options, const MarginMining<Dtype>& mining, Dtype loss_weight,
                         void* workspace, Dtype* embedding_diff, Dtype* beta_diff) {
  const std::size_t rows = static_cast<std::size_t>(n);
  const int betas = options.num_classes > 0 ? options.num_classes : 1;
  const int triplet_count = mining.counts[0], active = mining.counts[1];
  const Dtype margin = static_cast<Dtype>(options.margin), nu = static_cast<Dtype>(options.nu);
  if (triplet_count < 0) {  // non-finite input: NaN everywhere
    const Dtype nan = std::numeric_limits<Dtype>::quiet_NaN();
    if (embedding_diff) for (std::size_t k = 0; k < rows * dim; ++k) embedding_diff[k] = nan;
    if (beta_diff) for (int c = 0; c < betas; ++c) beta_diff[c] = nan;
    return;
  }
  const Dtype scale = active > 0 ? loss_weight / static_cast<Dtype>(active) : Dtype(0);
  if (beta_diff) {
    for (int c = 0; c < betas; ++c) {
      beta_diff[c] = active > 0 ? math::mul_rn(margin_beta_sum(c, triplet_count, mining.triplets, mining.pos_dist,
                                                         mining.neg_dist, beta, labels, options.num_classes, margin,
                                                         nu),
                                         scale)
                                : Dtype(0);
    }
  }
  if (!embedding_diff) return;
  if (active == 0) {
    for (std::size_t k = 0; k < rows * dim; ++k) embedding_diff[k] = Dtype(0);
    return;
  }
  Dtype* coefficient = static_cast<Dtype*>(workspace);  // [n*n]
  const Dtype eps = static_cast<Dtype>(options.eps);
  for (int r = 0; r < n; ++r) {
    for (int j = 0; j < n; ++j) {
      const int hinges = j == r ? 0
                                : margin_pair_hinges(r, j, mining.triplets, mining.anchor_count, mining.anchor_offset,
                                                     mining.pos_dist, mining.neg_dist, beta, labels,
                                                     options.num_classes, margin);
      coefficient[static_cast<std::size_t>(r) * n + j] =
          hinges == 0 ? Dtype(0)
                      : margin_pair_coefficient(hinges, scale, margin_distance(dim, embedding, r, j, eps));
    }
  }
  for (int r = 0; r < n; ++r) {
    for (int k = 0; k < dim; ++k) {
      embedding_diff[static_cast<std::size_t>(r) * dim + k] =
          margin_gradient_element(n, dim, r, k, embedding, coefficient + static_cast<std::size_t>(r) * n);
    }
  }
}

#define CAFFE_MINING_INSTANTIATE_MARGIN(Dtype)                                                                       \
  template void margin_forward_cpu<Dtype>(int, int, const Dtype*, const Dtype*, const Dtype*, const MarginOptions&, \
                                          uint64_t, int, const MarginMining<Dtype>&, void*, Dtype*);                 \
  template void margin_backward_cpu<Dtype>(int, int, const Dtype*, const Dtype*, const Dtype*,                      \
                                           const MarginOptions&, const MarginMining<Dtype>&, Dtype, void*, Dtype*,   \
                                           Dtype*);
CAFFE_MINING_INSTANTIATE_MARGIN(float)
CAFFE_MINING_INSTANTIATE_MARGIN(double)
#undef CAFFE_MINING_INSTANTIATE_MARGIN

}  // namespace caffe_mining
