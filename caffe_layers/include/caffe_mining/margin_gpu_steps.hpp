// The MarginLoss CUDA kernels' per-thread steps (margin.cu), as host/device functions: each kernel is a grid-stride
// loop over one of these, and tests/emulation/margin_gpu_emulation.cpp runs them serially on the host (in a
// scrambled thread order) against margin_forward_cpu / margin_backward_cpu, bit for bit. They call the shared steps
// of margin.hpp; what is the GPU's own is the split into kernels: the non-finite flag raised by any thread, every
// anchor's cumulative weights kept (n x n doubles) between the row kernel and the draw kernel, and the serial
// offsets, loss and C computed by one thread in the CPU's order.
#ifndef CAFFE_MINING_MARGIN_GPU_STEPS_HPP_
#define CAFFE_MINING_MARGIN_GPU_STEPS_HPP_

#include <math.h>
#include <stdint.h>

#include <cstddef>

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/common/math.hpp"
#include "caffe_mining/margin.hpp"

namespace caffe_mining {
namespace margin_gpu {

/// Thread k of the finiteness check over the embedding ([count]) and beta ([betas]): raises *flag (every writer
/// writes 1, so the race is benign).
template <typename Dtype>
CM_HOST_DEVICE void check_finite(std::size_t k, std::size_t count, const Dtype* embedding, const Dtype* beta,
                                 int* flag) {
  const Dtype value = k < count ? embedding[k] : beta[k - count];
  if (!math::is_finite(value)) *flag = 1;
}

/// Thread (i, j) of the distance kernel: d_ij (both halves computed: the same bits, as the CPU's mirror).
template <typename Dtype>
CM_HOST_DEVICE void distance(int i, int j, int n, int dim, const Dtype* embedding, Dtype eps, Dtype* dist,
                             int* flag) {
  const Dtype d = margin_distance(dim, embedding, i, j, eps);
  if (!math::is_finite(d)) *flag = 1;
  dist[static_cast<std::size_t>(i) * n + j] = d;
}

/// Thread i of the row kernel: anchor i's cumulative weights (row i of `cumulative`), its total and its count.
template <typename Dtype>
CM_HOST_DEVICE void anchor_row(int i, int n, int dim, const Dtype* dist, const Dtype* labels,
                               NegativeSampler sampler, double cutoff, double nonzero_loss_cutoff,
                               int negatives_per_positive, const int* flag, double* cumulative, double* totals,
                               int* anchor_count) {
  if (*flag) {
    anchor_count[i] = 0;
    totals[i] = 0.0;
    return;
  }
  totals[i] = margin_anchor_row(n, dim, i, dist, labels, sampler, cutoff, nonzero_loss_cutoff,
                                negatives_per_positive, cumulative + static_cast<std::size_t>(i) * n,
                                &anchor_count[i]);
}

/// The one thread of the offsets kernel: each anchor's first triplet and T (-1 when the flag is up), as the CPU's
/// loop (an anchor that would pass the capacity gets none).
CM_HOST_DEVICE void offsets(int n, int capacity, const int* flag, int* anchor_count, int* anchor_offset,
                            int* counts) {
  int offset = 0;
  for (int i = 0; i < n; ++i) {
    if (*flag) anchor_count[i] = 0;
    anchor_offset[i] = offset;
    if (anchor_count[i] > 0 && offset + anchor_count[i] > capacity) anchor_count[i] = 0;
    offset += anchor_count[i];
  }
  counts[0] = *flag ? -1 : offset;
  counts[1] = 0;
}

/// Thread i of the draw kernel: anchor i's triplets.
template <typename Dtype>
CM_HOST_DEVICE void anchor_draws(int i, int n, const Dtype* dist, const Dtype* labels, const double* cumulative,
                                 const double* totals, int negatives_per_positive, uint64_t seed, uint64_t iteration,
                                 const MarginMining<Dtype>& mining) {
  if (mining.anchor_count[i] == 0) return;
  margin_anchor_draws(n, i, dist, labels, cumulative + static_cast<std::size_t>(i) * n, n, nullptr, totals[i],
                      nullptr, 0, negatives_per_positive, seed, iteration, mining.anchor_offset[i], mining.triplets,
                      mining.pos_dist, mining.neg_dist);
}

/// The one thread of the loss kernel: E (NaN when the flag is up) and C.
template <typename Dtype>
CM_HOST_DEVICE void loss(const Dtype* beta, const Dtype* labels, int num_classes, Dtype margin, Dtype nu,
                         const MarginMining<Dtype>& mining, Dtype* loss_out) {
  if (mining.counts[0] < 0) {
    *loss_out = Dtype(NAN);
    return;
  }
  *loss_out = margin_loss_value(mining.counts[0], mining.triplets, mining.pos_dist, mining.neg_dist, beta, labels,
                                num_classes, margin, nu, &mining.counts[1]);
}

/// loss_weight / C, 0 when C = 0 (the CPU's expression).
template <typename Dtype>
CM_HOST_DEVICE Dtype backward_scale(const int* counts, Dtype loss_weight) {
  return counts[1] > 0 ? loss_weight / static_cast<Dtype>(counts[1]) : Dtype(0);
}

/// Thread c of the beta kernel: dE/dbeta_c (NaN after a non-finite forward).
template <typename Dtype>
CM_HOST_DEVICE void beta_gradient(int c, const Dtype* beta, const Dtype* labels, int num_classes, Dtype margin,
                                  Dtype nu, const MarginMining<Dtype>& mining, Dtype loss_weight, Dtype* beta_diff) {
  if (mining.counts[0] < 0) {
    beta_diff[c] = Dtype(NAN);
    return;
  }
  if (mining.counts[1] == 0) {
    beta_diff[c] = Dtype(0);
    return;
  }
  const Dtype sum = margin_beta_sum(c, mining.counts[0], mining.triplets, mining.pos_dist, mining.neg_dist, beta,
                                    labels, num_classes, margin, nu);
  beta_diff[c] = math::mul_rn(sum, backward_scale(mining.counts, loss_weight));
}

/// Thread (r, j) of the coefficient kernel: (V_rj / C) / d_rj into coefficient[r * n + j].
template <typename Dtype>
CM_HOST_DEVICE void pair_coefficient(int r, int j, int n, int dim, const Dtype* embedding, const Dtype* beta,
                                     const Dtype* labels, int num_classes, Dtype margin, Dtype eps,
                                     const MarginMining<Dtype>& mining, Dtype loss_weight, Dtype* coefficient) {
  Dtype value = Dtype(0);
  if (r != j && mining.counts[0] > 0 && mining.counts[1] > 0) {
    const int hinges = margin_pair_hinges(r, j, mining.triplets, mining.anchor_count, mining.anchor_offset,
                                          mining.pos_dist, mining.neg_dist, beta, labels, num_classes, margin);
    if (hinges != 0) {
      value = margin_pair_coefficient(hinges, backward_scale(mining.counts, loss_weight),
                                      margin_distance(dim, embedding, r, j, eps));
    }
  }
  coefficient[static_cast<std::size_t>(r) * n + j] = value;
}

/// Thread (r, k) of the gradient kernel: element k of dE/dx_r (NaN after a non-finite forward).
template <typename Dtype>
CM_HOST_DEVICE void gradient(int r, int k, int n, int dim, const Dtype* embedding, const Dtype* coefficient,
                             const int* counts, Dtype* embedding_diff) {
  const std::size_t at = static_cast<std::size_t>(r) * dim + k;
  if (counts[0] < 0) {
    embedding_diff[at] = Dtype(NAN);
  } else {
    embedding_diff[at] = counts[1] > 0
        ? margin_gradient_element(n, dim, r, k, embedding, coefficient + static_cast<std::size_t>(r) * n)
        : Dtype(0);
  }
}

}  // namespace margin_gpu
}  // namespace caffe_mining

#endif  // CAFFE_MINING_MARGIN_GPU_STEPS_HPP_
