// CPU implementation of the TripletLoss core (see caffe_mining/triplet.hpp for the math and the contracts).
#include "caffe_mining/triplet.hpp"
#include "caffe_mining/distances/squared_norm.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace caffe_mining {

namespace {

// Row-major upper triangle of C = X X^T (j >= i); the lower triangle is left as it was.
void syrk_upper(int n, int dim, const float* x, float* c) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, dim, 1.0f, x, dim, 0.0f, c, n);
}
void syrk_upper(int n, int dim, const double* x, double* c) {
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, dim, 1.0, x, dim, 0.0, c, n);
}

// Row-major C = alpha * A * B + beta * C (A: m x k, B: k x n).
void gemm(int m, int n, int k, float alpha, const float* a, const float* b, float beta, float* c) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, alpha, a, k, b, n, beta, c, n);
}
void gemm(int m, int n, int k, double alpha, const double* a, const double* b, double beta, double* c) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, alpha, a, k, b, n, beta, c, n);
}

// Whether some squared distance could be NaN or overflow: a norm that is NaN or inf, or 4 max |x_i|^2 = inf, which
// bounds every |x_i|^2 + |x_j|^2 - 2 x_i.x_j <= (|x_i| + |x_j|)^2.
template <typename Dtype>
bool distances_overflow(int n, const Dtype* sq_norm) {
  const Dtype kMax = std::numeric_limits<Dtype>::max();
  Dtype largest = Dtype(0);
  for (int i = 0; i < n; ++i) {
    if (!(sq_norm[i] <= kMax)) return true;  // NaN or inf
    largest = std::max(largest, sq_norm[i]);
  }
  return !(Dtype(4) * largest <= kMax);
}

}  // namespace

template <typename Dtype>
void triplet_forward_cpu(int n, int dim, const Dtype* embedding, const Dtype* labels, const TripletOptions& options,
                         const TripletMining<Dtype>& mining, Dtype* scratch, Dtype* loss) {
  const std::size_t nn = static_cast<std::size_t>(n);
  Dtype* sq_norm = scratch;
  for (int i = 0; i < n; ++i) sq_norm[i] = squared_norm(dim, embedding + i * static_cast<std::size_t>(dim));
  if (distances_overflow(n, sq_norm)) {
    std::fill(mining.dist, mining.dist + nn * nn, std::numeric_limits<Dtype>::quiet_NaN());
    std::fill(mining.weight, mining.weight + nn * nn, Dtype(0));
    if (options.mining == TripletMiner::kBatchHard) {
      std::fill(mining.positive, mining.positive + nn, -1);
      std::fill(mining.negative, mining.negative + nn, -1);
    } else if (options.mining == TripletMiner::kSemiHard) {
      std::fill(mining.pair_negative, mining.pair_negative + nn * nn, -1);
    }
    std::fill(mining.row_loss, mining.row_loss + nn, Dtype(0));
    std::fill(mining.row_terms, mining.row_terms + nn, 0LL);
    mining.terms[0] = -1;
    *loss = std::numeric_limits<Dtype>::quiet_NaN();
    return;
  }
  // The dot products of the upper triangle, then each pair's distance from its one dot product, into both (i, j)
  // and (j, i): D is symmetric to the bit.
  syrk_upper(n, dim, embedding, mining.dist);
  const Dtype eps = static_cast<Dtype>(options.eps);
  for (int i = 0; i < n; ++i) {
    Dtype* row = mining.dist + i * nn;
    for (int j = i; j < n; ++j) {
      const Dtype d = triplet_distance(sq_norm[i], sq_norm[j], row[j], eps, options.squared);
      row[j] = d;
      mining.dist[j * nn + i] = d;
    }
  }
  const TripletRowLoss<Dtype> term = {static_cast<Dtype>(options.margin), options.soft_margin};
  Dtype loss_sum = Dtype(0);
  long long terms = 0;
  for (int a = 0; a < n; ++a) {
    triplet_anchor_step(options.mining, term, n, a, labels, mining);
    loss_sum += mining.row_loss[a];
    terms += mining.row_terms[a];
  }
  mining.terms[0] = terms;
  *loss = terms > 0 ? loss_sum / static_cast<Dtype>(terms) : Dtype(0);
}

template <typename Dtype>
void triplet_backward_cpu(int n, int dim, const Dtype* embedding, const TripletOptions& options,
                          const TripletMining<Dtype>& mining, Dtype loss_weight, Dtype* scratch,
                          Dtype* embedding_diff) {
  const std::size_t nn = static_cast<std::size_t>(n);
  const std::size_t elements = nn * dim;
  const long long terms = mining.terms[0];
  if (terms < 0) {  // non-finite input: every gradient is NaN
    std::fill(embedding_diff, embedding_diff + elements, std::numeric_limits<Dtype>::quiet_NaN());
    return;
  }
  if (terms == 0) {
    std::memset(embedding_diff, 0, elements * sizeof(Dtype));
    return;
  }
  const Dtype scale = loss_weight / static_cast<Dtype>(terms);
  // S = V + V^T (symmetric), its row sums in increasing j; then dE/dX = diag(S 1) X - S X.
  Dtype* s = scratch + nn;
  Dtype* row_sum = s + nn * nn;
  for (int i = 0; i < n; ++i) {
    Dtype sum = Dtype(0);
    for (int j = 0; j < n; ++j) {
      const Dtype v = triplet_gradient_weight(mining.dist, mining.weight, n, i, j, scale, options.squared);
      s[i * nn + j] = v;
      sum += v;
    }
    row_sum[i] = sum;
  }
  for (int i = 0; i < n; ++i) {
    const std::size_t row = i * static_cast<std::size_t>(dim);
    for (int k = 0; k < dim; ++k) embedding_diff[row + k] = row_sum[i] * embedding[row + k];
  }
  gemm(n, dim, n, Dtype(-1), s, embedding, Dtype(1), embedding_diff);
}

template void triplet_forward_cpu<float>(int, int, const float*, const float*, const TripletOptions&,
                                         const TripletMining<float>&, float*, float*);
template void triplet_forward_cpu<double>(int, int, const double*, const double*, const TripletOptions&,
                                          const TripletMining<double>&, double*, double*);
template void triplet_backward_cpu<float>(int, int, const float*, const TripletOptions&, const TripletMining<float>&,
                                          float, float*, float*);
template void triplet_backward_cpu<double>(int, int, const double*, const TripletOptions&,
                                           const TripletMining<double>&, double, double*, double*);

}  // namespace caffe_mining
