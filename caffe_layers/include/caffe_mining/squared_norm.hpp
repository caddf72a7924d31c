// |x|^2 summed in one fixed order, so that identical rows give identical values wherever they sit in memory.
// BLAS dot products are not such a function: OpenBLAS's ddot rounds differently with the row's alignment, which
// broke the tie rule (identical pairs got different costs). Host code; the CUDA path has its own fixed order
// (a warp per row, lane k taking elements k, k + 32, ...).
#ifndef CAFFE_MINING_SQUARED_NORM_HPP_
#define CAFFE_MINING_SQUARED_NORM_HPP_

namespace caffe_mining {

/// Eight running sums (element k goes to sum k mod 8, the elements of each sum in increasing k), then
/// ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)). The eight sums are independent, so the compiler vectorizes
/// the loop without reordering any addition.
template <typename Dtype>
inline Dtype squared_norm(int dim, const Dtype* x) {
  constexpr int kSums = 8;
  Dtype sum[kSums] = {};
  int k = 0;
  for (; k + kSums <= dim; k += kSums) {
    for (int s = 0; s < kSums; ++s) sum[s] += x[k + s] * x[k + s];
  }
  for (int s = 0; k + s < dim; ++s) sum[s] += x[k + s] * x[k + s];
  return ((sum[0] + sum[1]) + (sum[2] + sum[3])) + ((sum[4] + sum[5]) + (sum[6] + sum[7]));
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_SQUARED_NORM_HPP_
