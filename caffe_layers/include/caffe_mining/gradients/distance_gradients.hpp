// Gradients of Euclidean distances d(a_i, p_j) = |a_i - p_j| (or sqrt(|a_i - p_j|^2 + eps)) on the CPU, for a loss
// that knows dL/dd of the pairs it used: sparse (a few pairs per row, one call per pair) or dense (a weight on every
// pair of the n x n matrix, two GEMMs, never an n x n x dim tensor). Host pointers, row-major; float and double.
#ifndef CAFFE_MINING_GRADIENTS_DISTANCE_GRADIENTS_HPP_
#define CAFFE_MINING_GRADIENTS_DISTANCE_GRADIENTS_HPP_

namespace caffe_mining {

/// One pair with coefficient c = (dL/dd) / d: a_diff += c (a - p) and p_diff -= c (a - p), over dim values, in one
/// pass over a and p (either target may be null; c = 0 touches nothing).
template <typename Dtype>
void add_distance_gradient(int dim, Dtype coeff, const Dtype* a, const Dtype* p, Dtype* a_diff, Dtype* p_diff);

/// Every pair, with weights V_ij = (dL/dD_ij) / D_ij (n x n) and their sums row_sum = V 1, col_sum = V^T 1:
///   anchor_diff = diag(row_sum) A - V P,   positive_diff = diag(col_sum) P - V^T A
/// written (not accumulated); either target may be null.
template <typename Dtype>
void dense_distance_gradient(int n, int dim, const Dtype* weight, const Dtype* row_sum, const Dtype* col_sum,
                             const Dtype* anchor, const Dtype* positive, Dtype* anchor_diff, Dtype* positive_diff);

}  // namespace caffe_mining

#endif  // CAFFE_MINING_GRADIENTS_DISTANCE_GRADIENTS_HPP_
