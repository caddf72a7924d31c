// CPU pairwise distances through one GEMM (see caffe_mining/distances/gemm_distances.hpp).
#include "caffe_mining/distances/gemm_distances.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "caffe_mining/common/cpu_lanes.hpp"
#include "caffe_mining/common/float_lanes.hpp"
#include "caffe_mining/distances/dot_distance.hpp"
#include "caffe_mining/distances/squared_norm.hpp"

namespace caffe_mining {

void cpu_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
              int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}
void cpu_gemm(bool trans_a, bool trans_b, int m, int n, int k, double alpha, const double* a, int lda,
              const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}

template <typename Dtype>
void squared_norms(int n, int dim, const Dtype* x, Dtype* sq_norm) {
  for (int i = 0; i < n; ++i) sq_norm[i] = squared_norm(dim, x + static_cast<std::size_t>(i) * dim);
}

template <typename Dtype>
bool distances_overflow(int n, const Dtype* sq_norm_a, const Dtype* sq_norm_p) {
  const Dtype kMax = std::numeric_limits<Dtype>::max();
  Dtype max_a = Dtype(0), max_p = Dtype(0);
  for (int i = 0; i < n; ++i) {
    if (!(sq_norm_a[i] <= kMax) || !(sq_norm_p[i] <= kMax)) return true;  // NaN or inf
    max_a = std::max(max_a, sq_norm_a[i]);
    max_p = std::max(max_p, sq_norm_p[i]);
  }
  return !(Dtype(2) * (max_a + max_p) <= kMax);
}

template <typename Dtype>
void dot_products(int n, int dim, const Dtype* anchor, const Dtype* positive, Dtype* dots) {
  cpu_gemm(false, true, n, n, dim, Dtype(1), anchor, dim, positive, dim, Dtype(0), dots, n);
}

namespace {

// x = sqrt(x) over a buffer. Under GCC's default -fmath-errno a sqrt loop keeps a libm call (for errno on a negative
// argument) and does not vectorize; the SSE square root is the same correctly rounded IEEE operation, so the values
// are identical (GCC 12 ignores __attribute__((optimize("no-math-errno"))) for this). Other targets take the plain
// loop (vectorized there when math errno is off).
inline void sqrt_in_place(int count, float* x) {
  int k = 0;
#if defined(__SSE2__)
  for (; k + 4 <= count; k += 4) _mm_storeu_ps(x + k, _mm_sqrt_ps(_mm_loadu_ps(x + k)));
#endif
  for (; k < count; ++k) x[k] = std::sqrt(x[k]);
}
inline void sqrt_in_place(int count, double* x) {
  int k = 0;
#if defined(__SSE2__)
  for (; k + 2 <= count; k += 2) _mm_storeu_pd(x + k, _mm_sqrt_pd(_mm_loadu_pd(x + k)));
#endif
  for (; k < count; ++k) x[k] = std::sqrt(x[k]);
}

}  // namespace

#if defined(__SSE2__)
#define CM_LANES_INC "dots_to_distances_lanes.inc"
#include "lane_widths.inc"
#endif

template <typename Dtype>
void dots_to_distances(int n, Dtype sq_norm_a, const Dtype* sq_norm_p, Dtype eps, Dtype* row) {
  for (int j = 0; j < n; ++j) row[j] = squared_distance_from_dot(sq_norm_a, sq_norm_p[j], row[j], eps);
  sqrt_in_place(n, row);
}

// Float rows in one pass over vector lanes (AVX2 where cpu_lanes_allow_avx2()), the last columns as above.
template <>
void dots_to_distances<float>(int n, float sq_norm_a, const float* sq_norm_p, float eps, float* row) {
  int start = 0;
#if defined(CAFFE_MINING_AVX2_LANES)
  start = cpu_lanes_allow_avx2() ? avx2_lanes::dots_to_distances_lanes(n, sq_norm_a, sq_norm_p, eps, row)
                                 : sse2_lanes::dots_to_distances_lanes(n, sq_norm_a, sq_norm_p, eps, row);
#elif defined(__SSE2__)
  start = sse2_lanes::dots_to_distances_lanes(n, sq_norm_a, sq_norm_p, eps, row);
#endif
  for (int j = start; j < n; ++j) row[j] = distance_from_dot(sq_norm_a, sq_norm_p[j], row[j], eps);
}

#define CM_INSTANTIATE_GEMM_DISTANCES(Dtype)                                                    \
  template void squared_norms<Dtype>(int, int, const Dtype*, Dtype*);                           \
  template bool distances_overflow<Dtype>(int, const Dtype*, const Dtype*);                     \
  template void dot_products<Dtype>(int, int, const Dtype*, const Dtype*, Dtype*);
CM_INSTANTIATE_GEMM_DISTANCES(float)
CM_INSTANTIATE_GEMM_DISTANCES(double)
template void dots_to_distances<double>(int, double, const double*, double, double*);
#undef CM_INSTANTIATE_GEMM_DISTANCES

}  // namespace caffe_mining
