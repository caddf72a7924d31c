// The row losses of HardNet (a positive distance against a negative one) with their derivatives, and how a row's
// loss, dloss/dpos and dloss/dneg follow from what its miner found: the element math of HardNetLoss, one copy for
// the CPU path and the CUDA kernels.
//   TRIPLET_MARGIN  max(margin + pos - neg, 0)
//   SOFTMAX         -log(e^(2-pos) / (e^(2-pos) + e^(2-neg))) = softplus(pos - neg)
//   CONTRASTIVE     max(margin - neg, 0) + pos
// The hinges' derivatives are 0 at the kink. softplus and sigmoid: common/math.hpp (the kit's exp and log1p).
#ifndef CAFFE_MINING_LOSSES_HARDNET_ROW_LOSS_HPP_
#define CAFFE_MINING_LOSSES_HARDNET_ROW_LOSS_HPP_

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/common/math.hpp"

namespace caffe_mining {

/// Per-row loss; values mirror HardNetLossParameter.LossType in caffe.proto.
enum class HardNetLossType : int { kTripletMargin = 0, kSoftmax = 1, kContrastive = 2 };

/// Row loss l(pos, neg) for one positive distance and one negative distance.
template <typename Dtype>
CM_HOST_DEVICE Dtype hardnet_row_loss(HardNetLossType type, Dtype margin, Dtype pos, Dtype neg) {
  switch (type) {
    case HardNetLossType::kSoftmax:
      return math::softplus(pos - neg);
    case HardNetLossType::kContrastive: {
      const Dtype hinge = margin - neg;
      return (hinge > Dtype(0) ? hinge : Dtype(0)) + pos;
    }
    case HardNetLossType::kTripletMargin:
    default: {
      const Dtype hinge = margin + pos - neg;
      return hinge > Dtype(0) ? hinge : Dtype(0);
    }
  }
}

/// d l(pos, neg) / d pos (hinges: 0 at the kink).
template <typename Dtype>
CM_HOST_DEVICE Dtype hardnet_row_loss_dpos(HardNetLossType type, Dtype margin, Dtype pos, Dtype neg) {
  switch (type) {
    case HardNetLossType::kSoftmax:
      return math::sigmoid(pos - neg);
    case HardNetLossType::kContrastive:
      return Dtype(1);
    case HardNetLossType::kTripletMargin:
    default:
      return margin + pos - neg > Dtype(0) ? Dtype(1) : Dtype(0);
  }
}

/// d l(pos, neg) / d neg (hinges: 0 at the kink).
template <typename Dtype>
CM_HOST_DEVICE Dtype hardnet_row_loss_dneg(HardNetLossType type, Dtype margin, Dtype pos, Dtype neg) {
  switch (type) {
    case HardNetLossType::kSoftmax:
      return -math::sigmoid(pos - neg);
    case HardNetLossType::kContrastive:
      return margin - neg > Dtype(0) ? Dtype(-1) : Dtype(0);
    case HardNetLossType::kTripletMargin:
    default:
      return margin + pos - neg > Dtype(0) ? Dtype(-1) : Dtype(0);
  }
}

/// A row's loss and its derivatives, as the backward reads them.
template <typename Dtype>
struct HardNetRowTerms {
  Dtype loss;  ///< 0 for an empty row
  Dtype dpos;  ///< d loss / d pos (averaged over the candidates for AVERAGE)
  Dtype dneg;  ///< d loss / d neg of the one chosen negative (MIN, RANDOM); 0 for AVERAGE and empty rows
};

/// The terms of a row with `count` valid candidates: empty rows 0; AVERAGE the means of the sums of l and dl/dpos
/// over the candidates (loss_sum, dpos_sum); MIN and RANDOM l, dl/dpos and dl/dneg of (pos, neg).
template <typename Dtype>
CM_HOST_DEVICE HardNetRowTerms<Dtype> hardnet_row_terms(HardNetLossType type, Dtype margin, bool average, int count,
                                                       Dtype pos, Dtype neg, Dtype loss_sum, Dtype dpos_sum) {
  HardNetRowTerms<Dtype> terms = {Dtype(0), Dtype(0), Dtype(0)};
  if (count <= 0) return terms;
  if (average) {
    terms.loss = loss_sum / Dtype(count);
    terms.dpos = dpos_sum / Dtype(count);
  } else {
    terms.loss = hardnet_row_loss(type, margin, pos, neg);
    terms.dpos = hardnet_row_loss_dpos(type, margin, pos, neg);
    terms.dneg = hardnet_row_loss_dneg(type, margin, pos, neg);
  }
  return terms;
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_LOSSES_HARDNET_ROW_LOSS_HPP_
