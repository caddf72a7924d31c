// Batch-hard mining (Hermans et al. 2017, "In Defense of the Triplet Loss"): for one anchor, its farthest positive
// and its closest negative in the batch, read from the anchor's row of the distance matrix. Ties go to the lowest
// index (only a strictly larger / smaller distance replaces the one held). Host and device.
#ifndef CAFFE_MINING_MINERS_BATCH_HARD_HPP_
#define CAFFE_MINING_MINERS_BATCH_HARD_HPP_

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/miners/label_masks.hpp"

namespace caffe_mining {

/// An anchor's hardest positive and hardest negative; -1 where it has none.
struct BatchHardPick {
  int positive;
  int negative;
};

/// Row `anchor` of the n x n distances `dist_row` (the anchor's row, n values).
template <typename Dtype>
CM_HOST_DEVICE BatchHardPick batch_hard_pick(const Dtype* dist_row, const Dtype* labels, int n, int anchor) {
  BatchHardPick pick = {-1, -1};
  for (int j = 0; j < n; ++j) {
    const Dtype d = dist_row[j];
    if (is_positive_of(labels, anchor, j)) {
      if (pick.positive < 0 || d > dist_row[pick.positive]) pick.positive = j;
    } else if (is_negative_of(labels, anchor, j)) {
      if (pick.negative < 0 || d < dist_row[pick.negative]) pick.negative = j;
    }
  }
  return pick;
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_MINERS_BATCH_HARD_HPP_
