// The triplet row loss: one anchor-positive distance d_ap against one anchor-negative distance d_an, and its
// derivative. Element math of TripletLoss, one copy for the CPU path and the CUDA kernels.
//   hinge (soft_margin false)  l = max(margin + d_ap - d_an, 0)        dl/dd_ap = 1 if open, else 0 (0 at the kink)
//   soft  (soft_margin true)   l = softplus(d_ap - d_an)                dl/dd_ap = sigmoid(d_ap - d_an)
// In both dl/dd_an = -dl/dd_ap, so one slope carries the term's whole gradient.
#ifndef CAFFE_MINING_LOSSES_TRIPLET_ROW_LOSS_HPP_
#define CAFFE_MINING_LOSSES_TRIPLET_ROW_LOSS_HPP_

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/common/math.hpp"

namespace caffe_mining {

/// One term's value and its slope dl/dd_ap (= -dl/dd_an).
template <typename Dtype>
struct TripletTerm {
  Dtype loss;
  Dtype slope;
};

/// The row loss of TripletLoss in Dtype: margin (unused when soft) and which of the two.
template <typename Dtype>
struct TripletRowLoss {
  Dtype margin;
  bool soft;

  CM_HOST_DEVICE TripletTerm<Dtype> operator()(Dtype d_ap, Dtype d_an) const {
    TripletTerm<Dtype> term;
    if (soft) {
      // math::softplus and math::sigmoid to the bit, sharing their one exponential e^-|z|.
      const Dtype z = d_ap - d_an;
      const Dtype e = math::exp(-(z < Dtype(0) ? -z : z));
      term.loss = (z > Dtype(0) ? z : Dtype(0)) + math::log1p(e);
      term.slope = z >= Dtype(0) ? Dtype(1) / (Dtype(1) + e) : e / (Dtype(1) + e);
    } else {
      const Dtype hinge = margin + d_ap - d_an;
      term.loss = hinge > Dtype(0) ? hinge : Dtype(0);
      term.slope = hinge > Dtype(0) ? Dtype(1) : Dtype(0);
    }
    return term;
  }
};

}  // namespace caffe_mining

#endif  // CAFFE_MINING_LOSSES_TRIPLET_ROW_LOSS_HPP_
