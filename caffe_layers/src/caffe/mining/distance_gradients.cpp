// CPU gradients of pairwise distances (see caffe_mining/gradients/distance_gradients.hpp).
#include "caffe_mining/gradients/distance_gradients.hpp"

#include <cstddef>

#include "caffe_mining/distances/gemm_distances.hpp"

namespace caffe_mining {

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

template <typename Dtype>
void dense_distance_gradient(int n, int dim, const Dtype* weight, const Dtype* row_sum, const Dtype* col_sum,
                             const Dtype* anchor, const Dtype* positive, Dtype* anchor_diff, Dtype* positive_diff) {
  const std::size_t width = static_cast<std::size_t>(dim);
  if (anchor_diff != nullptr) {
    for (int i = 0; i < n; ++i) {
      for (int k = 0; k < dim; ++k) anchor_diff[i * width + k] = row_sum[i] * anchor[i * width + k];
    }
    cpu_gemm(false, false, n, dim, n, Dtype(-1), weight, n, positive, dim, Dtype(1), anchor_diff, dim);
  }
  if (positive_diff != nullptr) {
    for (int j = 0; j < n; ++j) {
      for (int k = 0; k < dim; ++k) positive_diff[j * width + k] = col_sum[j] * positive[j * width + k];
    }
    cpu_gemm(true, false, n, dim, n, Dtype(-1), weight, n, anchor, dim, Dtype(1), positive_diff, dim);
  }
}

#define CM_INSTANTIATE_DISTANCE_GRADIENTS(Dtype)                                                             \
  template void add_distance_gradient<Dtype>(int, Dtype, const Dtype*, const Dtype*, Dtype*, Dtype*);       \
  template void dense_distance_gradient<Dtype>(int, int, const Dtype*, const Dtype*, const Dtype*, const Dtype*, \
                                               const Dtype*, Dtype*, Dtype*);
CM_INSTANTIATE_DISTANCE_GRADIENTS(float)
CM_INSTANTIATE_DISTANCE_GRADIENTS(double)
#undef CM_INSTANTIATE_DISTANCE_GRADIENTS

}  // namespace caffe_mining
