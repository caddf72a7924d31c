// CPU path of the MiningContrastiveLoss core (see caffe_mining/contrastive_mining.hpp).
#include "caffe_mining/contrastive_mining.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "caffe_mining/distances/squared_norm.hpp"

namespace caffe_mining {

namespace {

// Moves the `k` hardest pairs of [first, last) (indices into `key`) to the front, in O(last - first).
void keep_hardest(int* first, int* last, int k, const uint64_t* key) {
  if (k <= 0 || k >= last - first) return;
  std::nth_element(first, first + k, last, [key](int i, int j) {
    return harder_pair(key[i], i, key[j], j);
  });
}

}  // namespace

template <typename Dtype>
int find_invalid_label_cpu(const Dtype* sim, int n) {
  for (int i = 0; i < n; ++i) {
    if (sim[i] != Dtype(0) && sim[i] != Dtype(1)) return i;
  }
  return -1;
}

template <typename Dtype>
void contrastive_forward_cpu(int n, int dim, const Dtype* a, const Dtype* b, const Dtype* sim,
                             const ContrastiveOptions& options, const ContrastivePairs<Dtype>& pairs, void* workspace,
                             Dtype* loss) {
  const Dtype margin = static_cast<Dtype>(options.margin);
  const bool legacy = options.legacy_version;
  const int num_picked = num_picked_pairs(n, options.mining_ratio);
  Dtype* diff = pairs.diff;
  Dtype* dist_sq = pairs.dist_sq;
  Dtype* cost = pairs.cost;
  int* picked = pairs.picked;
  // n hardness keys, then n pair indices (similar ones first, then dissimilar ones).
  uint64_t* key = static_cast<uint64_t*>(workspace);
  int* order = reinterpret_cast<int*>(key + n);
  int num_similar = 0;
  bool finite = true;
  for (int i = 0; i < n; ++i) {
    const Dtype* a_i = a + static_cast<size_t>(i) * dim;
    const Dtype* b_i = b + static_cast<size_t>(i) * dim;
    Dtype* diff_i = diff + static_cast<size_t>(i) * dim;
    // A fixed summation order (not BLAS's dot, whose rounding follows the row's alignment): identical pairs
    // get identical costs, so ties stay ties. Caffe's ContrastiveLoss (ratio 1) agrees to rounding.
    dist_sq[i] = difference_squared_norm(dim, a_i, b_i, diff_i);
    finite = finite && std::isfinite(dist_sq[i]);
    const bool similar = sim[i] != Dtype(0);
    cost[i] = contrastive_cost(dist_sq[i], similar, margin, legacy);
    key[i] = hardness_key(cost[i]);
    picked[i] = 0;
    num_similar += similar;
  }
  if (num_picked <= 0) {
    *loss = contrastive_mean_cost(Dtype(0), num_picked, finite);
    return;
  }

  // Similar pairs fill order[0, num_similar), dissimilar ones order[num_similar, n).
  int next_similar = 0, next_dissimilar = num_similar;
  for (int i = 0; i < n; ++i) order[sim[i] != Dtype(0) ? next_similar++ : next_dissimilar++] = i;
  int k_similar, k_dissimilar;
  split_picked_pairs(num_similar, n - num_similar, num_picked, &k_similar, &k_dissimilar);
  keep_hardest(order, order + num_similar, k_similar, key);
  keep_hardest(order + num_similar, order + n, k_dissimilar, key);
  for (int r = 0; r < k_similar; ++r) picked[order[r]] = 1;
  for (int r = 0; r < k_dissimilar; ++r) picked[order[num_similar + r]] = 1;

  // Mined all the same when not finite (NaN ranks hardest), so the picks show where it is; the loss is NaN then.
  // Summed in index order and divided as Caffe does (sum / K / 2).
  Dtype picked_sum(0);
  if (finite) {
    for (int i = 0; i < n; ++i) {
      if (picked[i]) picked_sum += cost[i];
    }
  }
  *loss = contrastive_mean_cost(picked_sum, num_picked, finite);
}

template <typename Dtype>
void contrastive_backward_cpu(int n, int dim, const Dtype* sim, const ContrastiveOptions& options,
                              const ContrastivePairs<Dtype>& pairs, Dtype loss_weight, void* /*workspace*/,
                              Dtype* grad_a, Dtype* grad_b) {
  const Dtype margin = static_cast<Dtype>(options.margin);
  const bool legacy = options.legacy_version;
  const int num_picked = num_picked_pairs(n, options.mining_ratio);
  const Dtype* diff = pairs.diff;
  const Dtype* dist_sq = pairs.dist_sq;
  const int* picked = pairs.picked;
  if (!std::all_of(dist_sq, dist_sq + n, [](Dtype d) { return std::isfinite(d); })) {  // non-finite input
    const size_t count = static_cast<size_t>(n) * dim;
    if (grad_a) std::fill(grad_a, grad_a + count, std::numeric_limits<Dtype>::quiet_NaN());
    if (grad_b) std::fill(grad_b, grad_b + count, std::numeric_limits<Dtype>::quiet_NaN());
    return;
  }
  const Dtype alpha = contrastive_gradient_scale(loss_weight, num_picked);
  for (int i = 0; i < n; ++i) {
    const Dtype factor =
        contrastive_pair_factor(num_picked > 0 && picked[i], dist_sq[i], sim[i] != Dtype(0), margin, legacy, alpha);
    const size_t row = static_cast<size_t>(i) * dim;
    for (int j = 0; j < dim; ++j) {
      const Dtype g = contrastive_gradient(factor, diff[row + j]);
      if (grad_a) grad_a[row + j] = g;
      if (grad_b) grad_b[row + j] = -g;
    }
  }
}

#define CM_INSTANTIATE_CONTRASTIVE_CPU(Dtype)                                                             \
  template int find_invalid_label_cpu<Dtype>(const Dtype*, int);                                          \
  template void contrastive_forward_cpu<Dtype>(int, int, const Dtype*, const Dtype*, const Dtype*,        \
                                               const ContrastiveOptions&, const ContrastivePairs<Dtype>&, \
                                               void*, Dtype*);                                            \
  template void contrastive_backward_cpu<Dtype>(int, int, const Dtype*, const ContrastiveOptions&,        \
                                                const ContrastivePairs<Dtype>&, Dtype, void*, Dtype*, Dtype*);

CM_INSTANTIATE_CONTRASTIVE_CPU(float)
CM_INSTANTIATE_CONTRASTIVE_CPU(double)

#undef CM_INSTANTIATE_CONTRASTIVE_CPU

}  // namespace caffe_mining
