// The triplet row loss: one anchor-positive distance d_ap against one anchor-negative distance d_an, and its
// derivative. Element math of TripletLoss, one copy for the CPU path and the CUDA kernels.
//   hinge (soft_margin false)  l = max(margin + d_ap - d_an, 0)        dl/dd_ap = 1 if open, else 0 (0 at the kink)
//   soft  (soft_margin true)   l = softplus(d_ap - d_an)                dl/dd_ap = sigmoid(d_ap - d_an)
// In both dl/dd_an = -dl/dd_ap, so one slope carries the term's whole gradient.
#ifndef CAFFE_MINING_LOSSES_TRIPLET_ROW_LOSS_HPP_
#define CAFFE_MINING_LOSSES_TRIPLET_ROW_LOSS_HPP_

#include <math.h>

#include "caffe_mining/host_device.hpp"

namespace caffe_mining {

// float/double overloads usable on host and device (names private to this loss).
CM_HOST_DEVICE float triplet_exp(float x) { return expf(x); }
CM_HOST_DEVICE double triplet_exp(double x) { return exp(x); }
CM_HOST_DEVICE float triplet_log1p(float x) { return log1pf(x); }
CM_HOST_DEVICE double triplet_log1p(double x) { return log1p(x); }

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
      // softplus and sigmoid without overflow for large |x|
      const Dtype x = d_ap - d_an;
      const Dtype e = triplet_exp(x < Dtype(0) ? x : -x);  // e^-|x|, in (0, 1]
      term.loss = (x > Dtype(0) ? x : Dtype(0)) + triplet_log1p(e);
      term.slope = x >= Dtype(0) ? Dtype(1) / (Dtype(1) + e) : e / (Dtype(1) + e);
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
