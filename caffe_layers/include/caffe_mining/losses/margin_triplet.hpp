// The per-triplet cost of the margin loss ("Sampling Matters in Deep Embedding Learning", Wu et al. 2017, eq. 4),
// with a learnable boundary beta between positive and negative distances:
//   pos hinge (d_ap - beta + margin)+,  neg hinge (beta - d_an + margin)+,  plus nu * beta per triplet.
// Host/device element functions, one order of operations for the CPU and the GPU.
#ifndef CAFFE_MINING_LOSSES_MARGIN_TRIPLET_HPP_
#define CAFFE_MINING_LOSSES_MARGIN_TRIPLET_HPP_

#include "caffe_mining/common/round_to_nearest.hpp"
#include "caffe_mining/common/host_device.hpp"

namespace caffe_mining {

/// d_ap - beta + margin (the positive pair's hinge argument).
template <typename Dtype>
CM_HOST_DEVICE Dtype margin_pos_argument(Dtype pos_dist, Dtype beta, Dtype margin) {
  return (pos_dist - beta) + margin;
}

/// beta - d_an + margin (the negative pair's hinge argument).
template <typename Dtype>
CM_HOST_DEVICE Dtype margin_neg_argument(Dtype neg_dist, Dtype beta, Dtype margin) {
  return (beta - neg_dist) + margin;
}

/// The triplet's term of the loss's sum: (pos)+ + (neg)+ + nu beta.
template <typename Dtype>
CM_HOST_DEVICE Dtype margin_triplet_term(Dtype pos_dist, Dtype neg_dist, Dtype beta, Dtype margin, Dtype nu) {
  const Dtype pos = margin_pos_argument(pos_dist, beta, margin), neg = margin_neg_argument(neg_dist, beta, margin);
  const Dtype hinges = (pos > Dtype(0) ? pos : Dtype(0)) + (neg > Dtype(0) ? neg : Dtype(0));
  return math::add_rn(hinges, math::mul_rn(nu, beta));
}

/// How many of the triplet's two hinges are non-zero (the loss divides by their count over the batch).
template <typename Dtype>
CM_HOST_DEVICE int margin_triplet_active(Dtype pos_dist, Dtype neg_dist, Dtype beta, Dtype margin) {
  return (margin_pos_argument(pos_dist, beta, margin) > Dtype(0) ? 1 : 0) +
         (margin_neg_argument(neg_dist, beta, margin) > Dtype(0) ? 1 : 0);
}

/// d term / d beta: -[pos > 0] + [neg > 0] + nu (a hinge at its kink counts as 0).
template <typename Dtype>
CM_HOST_DEVICE Dtype margin_triplet_dbeta(Dtype pos_dist, Dtype neg_dist, Dtype beta, Dtype margin, Dtype nu) {
  const Dtype pos_on = margin_pos_argument(pos_dist, beta, margin) > Dtype(0) ? Dtype(1) : Dtype(0);
  const Dtype neg_on = margin_neg_argument(neg_dist, beta, margin) > Dtype(0) ? Dtype(1) : Dtype(0);
  return (neg_on - pos_on) + nu;
}

/// d term / d d_ap: [pos > 0].
template <typename Dtype>
CM_HOST_DEVICE Dtype margin_triplet_dpos(Dtype pos_dist, Dtype beta, Dtype margin) {
  return margin_pos_argument(pos_dist, beta, margin) > Dtype(0) ? Dtype(1) : Dtype(0);
}

/// d term / d d_an: -[neg > 0].
template <typename Dtype>
CM_HOST_DEVICE Dtype margin_triplet_dneg(Dtype neg_dist, Dtype beta, Dtype margin) {
  return margin_neg_argument(neg_dist, beta, margin) > Dtype(0) ? Dtype(-1) : Dtype(0);
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_LOSSES_MARGIN_TRIPLET_HPP_
