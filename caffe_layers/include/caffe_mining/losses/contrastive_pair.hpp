// The contrastive loss of one pair (Hadsell et al. 2006), as Caffe's ContrastiveLossLayer computes it, with its
// gradient factor and the batch's mean: the element math of MiningContrastiveLoss, one copy for the CPU path and
// the CUDA kernels.
#ifndef CAFFE_MINING_LOSSES_CONTRASTIVE_PAIR_HPP_
#define CAFFE_MINING_LOSSES_CONTRASTIVE_PAIR_HPP_

#include <math.h>

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/common/math.hpp"

namespace caffe_mining {

/// Caffe's guard against division by a zero distance in the non-legacy dissimilar gradient.
template <typename Dtype>
CM_HOST_DEVICE Dtype contrastive_distance_guard() { return Dtype(1e-4); }

/**
 * @brief Cost of one pair, exactly as Caffe's ContrastiveLossLayer computes it.
 *
 * similar: @f$ d^2 @f$; dissimilar: @f$ \max(m - d, 0)^2 @f$ with @f$ d = \sqrt{d^2} @f$;
 * dissimilar with @p legacy: @f$ \max(m - d^2, 0) @f$.
 */
template <typename Dtype>
CM_HOST_DEVICE Dtype contrastive_cost(Dtype dist_sq, bool similar, Dtype margin, bool legacy) {
  if (similar || dist_sq != dist_sq) return dist_sq;  // a NaN distance stays NaN (the hinge would hide it)
  if (legacy) {
    const Dtype mdist = margin - dist_sq;
    return mdist > Dtype(0) ? mdist : Dtype(0);
  }
  const Dtype mdist = margin - math::sqrt(dist_sq);
  const Dtype hinge = mdist > Dtype(0) ? mdist : Dtype(0);
  return hinge * hinge;
}

/**
 * @brief Factor g such that @f$ \partial (\alpha \cdot cost / 2) / \partial a = g \, (a - b) @f$ and
 * @f$ \partial (\alpha \cdot cost / 2) / \partial b = -g \, (a - b) @f$.
 *
 * With @f$ \alpha = \lambda / K @f$ (@f$\lambda@f$ the top diff) this is the gradient of the loss
 * @f$ \lambda E @f$ for one picked pair. Written with the same operations, in the same order, as Caffe's
 * ContrastiveLossLayer::Backward_cpu (alpha, -alpha, -alpha * mdist / (d + 1e-4)), so that mining_ratio = 1
 * reproduces Caffe's gradients. At the hinge (mdist == 0) the gradient is 0, as in Caffe.
 */
template <typename Dtype>
CM_HOST_DEVICE Dtype contrastive_diff_factor(Dtype dist_sq, bool similar, Dtype margin, bool legacy,
                                             Dtype alpha) {
  if (similar) return alpha;
  if (legacy) return (margin - dist_sq) > Dtype(0) ? -alpha : Dtype(0);
  const Dtype dist = math::sqrt(dist_sq);
  const Dtype mdist = margin - dist;
  return mdist > Dtype(0) ? -alpha * mdist / (dist + contrastive_distance_guard<Dtype>()) : Dtype(0);
}

/// E = (sum of the K picked costs) / K / 2, divided as Caffe divides; 0 when K = 0; NaN when some pair's distance
/// is not finite (a diverged batch never shows a finite loss).
template <typename Dtype>
CM_HOST_DEVICE Dtype contrastive_mean_cost(Dtype picked_cost_sum, int num_picked, bool finite) {
  if (!finite) return Dtype(NAN);
  return num_picked > 0 ? picked_cost_sum / static_cast<Dtype>(num_picked) / Dtype(2) : Dtype(0);
}

/// alpha = loss_grad / K, the scale of every picked pair's gradient (0 when K = 0).
template <typename Dtype>
CM_HOST_DEVICE Dtype contrastive_gradient_scale(Dtype loss_grad, int num_picked) {
  return num_picked > 0 ? loss_grad / static_cast<Dtype>(num_picked) : Dtype(0);
}

/// The gradient factor of pair i: contrastive_diff_factor for a picked pair, 0 for the others.
template <typename Dtype>
CM_HOST_DEVICE Dtype contrastive_pair_factor(bool picked, Dtype dist_sq, bool similar, Dtype margin, bool legacy,
                                             Dtype alpha) {
  return picked ? contrastive_diff_factor(dist_sq, similar, margin, legacy, alpha) : Dtype(0);
}

/// d E / d a_k = factor * (a_k - b_k) (and d E / d b_k its negative); written as zero rather than 0 * diff, so that
/// unpicked rows stay 0 even where diff is not finite.
template <typename Dtype>
CM_HOST_DEVICE Dtype contrastive_gradient(Dtype factor, Dtype diff) {
  return factor != Dtype(0) ? factor * diff : Dtype(0);
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_LOSSES_CONTRASTIVE_PAIR_HPP_
