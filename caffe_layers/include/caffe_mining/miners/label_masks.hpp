// Which rows of a labelled batch are an anchor's positives and negatives: the masks every label-based miner uses.
//   positive of anchor a: j != a with label_j == label_a      negative of anchor a: label_j != label_a
// Labels are class ids held in the features' float type; only their equality matters. Host and device.
#ifndef CAFFE_MINING_MINERS_LABEL_MASKS_HPP_
#define CAFFE_MINING_MINERS_LABEL_MASKS_HPP_

#include <cmath>

#include "caffe_mining/common/host_device.hpp"

namespace caffe_mining {

template <typename Dtype>
CM_HOST_DEVICE bool is_positive_of(const Dtype* labels, int anchor, int j) {
  return j != anchor && labels[j] == labels[anchor];
}

template <typename Dtype>
CM_HOST_DEVICE bool is_negative_of(const Dtype* labels, int anchor, int j) {
  return labels[j] != labels[anchor];
}

/// Whether the anchor has at least one negative among the n rows.
template <typename Dtype>
CM_HOST_DEVICE bool has_negative(const Dtype* labels, int n, int anchor) {
  for (int j = 0; j < n; ++j) {
    if (is_negative_of(labels, anchor, j)) return true;
  }
  return false;
}

/// Index of the first label that is not finite (a NaN label would match nothing, silently), or -1 (host values).
template <typename Dtype>
int find_non_finite_label(const Dtype* labels, int n) {
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(labels[i])) return i;
  }
  return -1;
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_MINERS_LABEL_MASKS_HPP_
