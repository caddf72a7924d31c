// The per-element steps of TripletLoss's CUDA kernels (triplet.cu), as host/device functions: the kernels are
// grid-stride loops over them, and tests/emulation/triplet_gpu_emulation.cpp runs the same steps serially on the
// host against the CPU core (no GPU needed to check their indexing, mirroring and order independence).
#ifndef CAFFE_MINING_TRIPLET_GPU_STEPS_HPP_
#define CAFFE_MINING_TRIPLET_GPU_STEPS_HPP_

#include <math.h>

#include <cstddef>

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/triplet.hpp"

namespace caffe_mining {
namespace triplet_gpu {

/// distances_kernel, element e = r n + c of the n x n matrix. cuBLAS's SYRK (column-major upper = row-major lower)
/// left x_r.x_c at (r, c) for r >= c; that pair's distance goes to (r, c) and (c, r), written by this element
/// alone (elements with r < c do nothing), so D is symmetric to the bit. NaN when the input overflows.
template <typename Dtype>
CM_HOST_DEVICE void pair_distance(int n, std::size_t e, const Dtype* sq_norm, bool overflow, Dtype eps, bool squared,
                                  Dtype* dist) {
  const int r = static_cast<int>(e / n), c = static_cast<int>(e % n);
  if (r < c) return;
  const Dtype d = overflow ? Dtype(NAN) : triplet_distance(sq_norm[r], sq_norm[c], dist[e], eps, squared);
  dist[e] = d;
  dist[static_cast<std::size_t>(c) * n + r] = d;
}

/// anchors_kernel, anchor a: triplet_anchor_step, or with overflowing input the header's "nothing mined" outputs.
template <typename Dtype>
CM_HOST_DEVICE void anchor(TripletMiner miner, const TripletRowLoss<Dtype>& term, int n, int a, const Dtype* labels,
                           bool overflow, const TripletMining<Dtype>& mining) {
  if (!overflow) {
    triplet_anchor_step(miner, term, n, a, labels, mining);
    return;
  }
  const std::size_t row = static_cast<std::size_t>(a) * n;
  for (int j = 0; j < n; ++j) {
    mining.weight[row + j] = Dtype(0);
    if (miner == TripletMiner::kSemiHard) mining.pair_negative[row + j] = -1;
  }
  if (miner == TripletMiner::kBatchHard) mining.positive[a] = mining.negative[a] = -1;
  mining.row_loss[a] = Dtype(0);
  mining.row_terms[a] = 0;
}

/// gradient_weights_kernel, element e: S_ij with scale = loss_weight / T (T = terms read on the device), 0 when
/// T <= 0.
template <typename Dtype>
CM_HOST_DEVICE Dtype gradient_weight(int n, std::size_t e, const Dtype* dist, const Dtype* weight, long long terms,
                                     Dtype loss_weight, bool squared) {
  if (terms <= 0) return Dtype(0);
  const Dtype scale = loss_weight / static_cast<Dtype>(terms);
  return triplet_gradient_weight(dist, weight, n, static_cast<int>(e / n), static_cast<int>(e % n), scale, squared);
}

}  // namespace triplet_gpu
}  // namespace caffe_mining

#endif  // CAFFE_MINING_TRIPLET_GPU_STEPS_HPP_
