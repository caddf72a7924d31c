// The triplet row loss: one anchor-positive distance d_ap against one anchor-negative distance d_an, and its
// derivative. Element math of TripletLoss, one copy for the CPU path and the CUDA kernels.
//   hinge (soft_margin false)  l = max(margin + d_ap - d_an, 0)        dl/dd_ap = 1 if open, else 0 (0 at the kink)
//   soft  (soft_margin true)   l = softplus(d_ap - d_an)                dl/dd_ap = sigmoid(d_ap - d_an)
// In both dl/dd_an = -dl/dd_ap, so one slope carries the term's whole gradient. The soft term's exponential and
// log1p are the kit's (common/exp_log.hpp, within 2 ulp): the same bits on the CPU, in its vector lanes and on
// the GPU.
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

/// softplus(z) and sigmoid(z) sharing one exponential e^-|z| (common/math.hpp), element-wise for a vector T (the
/// CPU's lanes).
template <typename T>
CM_HOST_DEVICE_LANES void soft_margin_term(const T& z, T* loss, T* slope) {
  const T e = math::exp_minus_abs(z);
  *loss = math::softplus_with(z, e);
  *slope = math::sigmoid_with(z, e);
}

/// The row loss of TripletLoss in Dtype: margin (unused when soft) and which of the two.
template <typename Dtype>
struct TripletRowLoss {
  Dtype margin;
  bool soft;

  CM_HOST_DEVICE TripletTerm<Dtype> operator()(Dtype d_ap, Dtype d_an) const {
    TripletTerm<Dtype> term;
    if (soft) {
      soft_margin_term(d_ap - d_an, &term.loss, &term.slope);
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
