// Semi-hard negative mining (Schroff et al. 2015, FaceNet), as TensorFlow Addons' triplet_semihard_loss defines it:
// for the positive pair (a, p) with distance d_ap, the closest negative of a that is farther than d_ap
// (d_an > d_ap, strictly); when a has no such negative, its farthest negative. Ties go to the lowest index.
// Host and device.
#ifndef CAFFE_MINING_MINERS_SEMI_HARD_HPP_
#define CAFFE_MINING_MINERS_SEMI_HARD_HPP_

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/miners/label_masks.hpp"

namespace caffe_mining {

/// The negative of pair (anchor, p) whose distance is d_ap, from the anchor's row `dist_row` (n values); -1 when the
/// anchor has no negative.
template <typename Dtype>
CM_HOST_DEVICE int semi_hard_negative(const Dtype* dist_row, const Dtype* labels, int n, int anchor, Dtype d_ap) {
  int closest_beyond = -1, farthest = -1;
  for (int j = 0; j < n; ++j) {
    if (!is_negative_of(labels, anchor, j)) continue;
    const Dtype d = dist_row[j];
    if (d > d_ap && (closest_beyond < 0 || d < dist_row[closest_beyond])) closest_beyond = j;
    if (farthest < 0 || d > dist_row[farthest]) farthest = j;
  }
  return closest_beyond >= 0 ? closest_beyond : farthest;
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_MINERS_SEMI_HARD_HPP_
