// Pairwise Euclidean distances on the CPU through one GEMM: the squared norms, the dot products A * P^T (cblas),
// and the distance matrix from them (distances/dot_distance.hpp's element rule). Host pointers, row-major, caller-owned
// buffers; float and double.
#ifndef CAFFE_MINING_DISTANCES_GEMM_DISTANCES_HPP_
#define CAFFE_MINING_DISTANCES_GEMM_DISTANCES_HPP_

namespace caffe_mining {

/// Row-major C = alpha * op(A) * op(B) + beta * C (cblas_sgemm / cblas_dgemm).
void cpu_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
              int ldb, float beta, float* c, int ldc);
void cpu_gemm(bool trans_a, bool trans_b, int m, int n, int k, double alpha, const double* a, int lda,
              const double* b, int ldb, double beta, double* c, int ldc);

/// sq_norm[i] = |x_i|^2 of the n rows of x (n x dim), in squared_norm's fixed order: identical rows get identical
/// norms, so ties stay ties.
template <typename Dtype>
void squared_norms(int n, int dim, const Dtype* x, Dtype* sq_norm);

/// Whether some squared distance |a_i|^2 + |p_j|^2 - 2 a_i.p_j could be NaN or overflow: a norm that is NaN or inf
/// (a NaN or inf feature, or an overflowing sum), or 2 (max |a_i|^2 + max |p_j|^2) = inf, which bounds every one of
/// them by (|a_i| + |p_j|)^2.
template <typename Dtype>
bool distances_overflow(int n, const Dtype* sq_norm_a, const Dtype* sq_norm_p);

/// dots (n x n) = A P^T, dots[i * n + j] = a_i.p_j, for A and P n x dim.
template <typename Dtype>
void dot_products(int n, int dim, const Dtype* anchor, const Dtype* positive, Dtype* dots);

/// Row i of the dot products (n values, in place) turned into D_ij = distance_from_dot(|a_i|^2, |p_j|^2, a_i.p_j,
/// eps): the same operations in the same order, vectorized (float: one pass in the CPU's widest lanes; double: two
/// passes, the square roots in SSE2).
template <typename Dtype>
void dots_to_distances(int n, Dtype sq_norm_a, const Dtype* sq_norm_p, Dtype eps, Dtype* row);
template <>
void dots_to_distances<float>(int n, float sq_norm_a, const float* sq_norm_p, float eps, float* row);

}  // namespace caffe_mining

#endif  // CAFFE_MINING_DISTANCES_GEMM_DISTANCES_HPP_
