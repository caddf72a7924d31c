// CPU path of the MiningContrastiveLoss core (see caffe_mining/contrastive_mining.hpp).
#include "caffe_mining/contrastive_mining.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "caffe_mining/squared_norm.hpp"

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

size_t contrastive_workspace_bytes_cpu(int n) {
  // n pair indices (similar ones first, then dissimilar ones) and n hardness keys.
  return static_cast<size_t>(n) * (sizeof(uint64_t) + sizeof(int));
}

template <typename Dtype>
int find_invalid_label_cpu(const Dtype* sim, int n) {
  for (int i = 0; i < n; ++i) {
    if (sim[i] != Dtype(0) && sim[i] != Dtype(1)) return i;
  }
  return -1;
}

template <typename Dtype>
Dtype contrastive_forward_cpu(int n, int dim, const Dtype* a, const Dtype* b, const Dtype* sim,
                              Dtype margin, bool legacy, int num_picked, Dtype* diff, Dtype* dist_sq,
                              Dtype* cost, int* picked, void* workspace) {
  uint64_t* key = static_cast<uint64_t*>(workspace);
  int* order = reinterpret_cast<int*>(key + n);
  int num_similar = 0;
  bool finite = true;
  for (int i = 0; i < n; ++i) {
    const Dtype* a_i = a + static_cast<size_t>(i) * dim;
    const Dtype* b_i = b + static_cast<size_t>(i) * dim;
    Dtype* diff_i = diff + static_cast<size_t>(i) * dim;
    for (int j = 0; j < dim; ++j) diff_i[j] = a_i[j] - b_i[j];
    // A fixed summation order (not BLAS's dot, whose rounding follows the row's alignment): identical pairs
    // get identical costs, so ties stay ties. Caffe's ContrastiveLoss (ratio 1) agrees to rounding.
    dist_sq[i] = squared_norm(dim, diff_i);
    finite = finite && std::isfinite(dist_sq[i]);
    const bool similar = sim[i] != Dtype(0);
    cost[i] = contrastive_cost(dist_sq[i], similar, margin, legacy);
    key[i] = hardness_key(cost[i]);
    picked[i] = 0;
    num_similar += similar;
  }
  const Dtype kNaN = std::numeric_limits<Dtype>::quiet_NaN();
  if (num_picked <= 0) return finite ? Dtype(0) : kNaN;

  // Similar pairs fill order[0, num_similar), dissimilar ones order[num_similar, n).
  int next_similar = 0, next_dissimilar = num_similar;
  for (int i = 0; i < n; ++i) order[sim[i] != Dtype(0) ? next_similar++ : next_dissimilar++] = i;
  int k_similar, k_dissimilar;
  split_picked_pairs(num_similar, n - num_similar, num_picked, &k_similar, &k_dissimilar);
  keep_hardest(order, order + num_similar, k_similar, key);
  keep_hardest(order + num_similar, order + n, k_dissimilar, key);
  for (int r = 0; r < k_similar; ++r) picked[order[r]] = 1;
  for (int r = 0; r < k_dissimilar; ++r) picked[order[num_similar + r]] = 1;

  if (!finite) return kNaN;  // mined all the same (NaN ranks hardest), so the picks show where it is
  // Summed in index order and divided as Caffe does (sum / K / 2).
  Dtype loss(0);
  for (int i = 0; i < n; ++i) {
    if (picked[i]) loss += cost[i];
  }
  return loss / static_cast<Dtype>(num_picked) / Dtype(2);
}

template <typename Dtype>
void contrastive_backward_cpu(int n, int dim, const Dtype* sim, Dtype margin, bool legacy,
                              int num_picked, Dtype loss_grad, const Dtype* diff, const Dtype* dist_sq,
                              const int* picked, Dtype* grad_a, Dtype* grad_b) {
  if (!std::all_of(dist_sq, dist_sq + n, [](Dtype d) { return std::isfinite(d); })) {  // non-finite input
    const size_t count = static_cast<size_t>(n) * dim;
    if (grad_a) std::fill(grad_a, grad_a + count, std::numeric_limits<Dtype>::quiet_NaN());
    if (grad_b) std::fill(grad_b, grad_b + count, std::numeric_limits<Dtype>::quiet_NaN());
    return;
  }
  const Dtype alpha = num_picked > 0 ? loss_grad / static_cast<Dtype>(num_picked) : Dtype(0);
  for (int i = 0; i < n; ++i) {
    const Dtype factor = (num_picked > 0 && picked[i])
        ? contrastive_diff_factor(dist_sq[i], sim[i] != Dtype(0), margin, legacy, alpha)
        : Dtype(0);
    const size_t row = static_cast<size_t>(i) * dim;
    for (int j = 0; j < dim; ++j) {
      // Written as zero rather than 0 * diff so that unpicked rows stay 0 even if diff is not finite.
      const Dtype g = factor != Dtype(0) ? factor * diff[row + j] : Dtype(0);
      if (grad_a) grad_a[row + j] = g;
      if (grad_b) grad_b[row + j] = -g;
    }
  }
}

#define CM_INSTANTIATE_CONTRASTIVE_CPU(Dtype)                                                        \
  template int find_invalid_label_cpu<Dtype>(const Dtype*, int);                                     \
  template Dtype contrastive_forward_cpu<Dtype>(int, int, const Dtype*, const Dtype*, const Dtype*,  \
                                                Dtype, bool, int, Dtype*, Dtype*, Dtype*, int*,      \
                                                void*);                                              \
  template void contrastive_backward_cpu<Dtype>(int, int, const Dtype*, Dtype, bool, int, Dtype,     \
                                                const Dtype*, const Dtype*, const int*, Dtype*,      \
                                                Dtype*);

CM_INSTANTIATE_CONTRASTIVE_CPU(float)
CM_INSTANTIATE_CONTRASTIVE_CPU(double)

#undef CM_INSTANTIATE_CONTRASTIVE_CPU

}  // namespace caffe_mining
