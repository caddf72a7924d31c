#ifndef CAFFE_TRIPLET_LOSS_LAYER_HPP_
#define CAFFE_TRIPLET_LOSS_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"
#include "caffe/syncedmem.hpp"

#include "caffe/layers/loss_layer.hpp"
#include "caffe_mining/triplet.hpp"

namespace caffe {

/**
 * @brief The triplet loss with in-batch mining over one labelled batch
 *        (Schroff et al. 2015; Hermans et al. 2017):
 *        @f$ E = \frac{1}{T} \sum_{(a, p, n)} \ell(d_{ap}, d_{an}) @f$ with
 *        @f$ d_{ij} = \sqrt{\max(\|x_i\|^2 + \|x_j\|^2 - 2 x_i^\top x_j, 0)
 *            + \epsilon} @f$ (one SYRK for the whole batch; `squared`: no
 *        root, no eps) and
 *        @f$ \ell(d^+, d^-) = \max(m + d^+ - d^-, 0) @f$ (margin m = 0.2),
 *        or @f$ \log(1 + e^{d^+ - d^-}) @f$ with `soft_margin`.
 *
 * Positives of anchor a: the other rows of its class; negatives: the rows of
 * other classes. Mining (`mining`):
 *   - BATCH_HARD (default): every anchor with a positive and a negative gives
 *     one term, its farthest positive against its closest negative (ties:
 *     lowest index); T = the number of such anchors.
 *   - BATCH_ALL: every (a, p, n); T = the number of terms with
 *     @f$ \ell > 0 @f$ (E = 0 when none).
 *   - SEMI_HARD (FaceNet, as TensorFlow Addons' triplet_semihard_loss): every
 *     ordered positive pair (a, p) of an anchor with a negative gives one
 *     term, with the closest negative farther than @f$ d_{ap} @f$, else the
 *     farthest negative (ties: lowest index); T = the number of such pairs.
 * An anchor (pair) without a positive or a negative gives no term; with no
 * term at all E = 0 and the gradient is 0, never NaN.
 *
 * Backward is the exact gradient of E (0 at the hinge's kink; BATCH_ALL's T
 * held constant, as it is almost everywhere), through
 * @f$ \partial d_{ij} / \partial x_i = (x_i - x_j) / d_{ij} @f$ (squared:
 * @f$ 2 (x_i - x_j) @f$), as one N x N x D GEMM on a weight matrix: O(N^2)
 * memory in every mode, BATCH_ALL's N^3 terms included (never stored).
 *
 * Divergences from the papers and libraries (details:
 * include/caffe_mining/triplet.hpp): eps inside the root (the libraries take
 * the root of max(d^2, 0), infinite derivative at 0); anchors and pairs with
 * no positive or negative leave the mean (TF Addons: NaN with no positive
 * pair, #1676, #2447; its hard loss pushes negatives of anchors without a
 * positive); BATCH_ALL's mean over the active terms gives 0, not NaN, when
 * none is active.
 *
 * @param bottom input Blob vector (length 2)
 *   -# @f$ (N \times D) @f$ or @f$ (N \times D \times 1 \times 1) @f$
 *      the embeddings @f$ x @f$
 *   -# N values (any shape of count N): integer class ids @f$ y @f$. Not
 *      differentiable.
 * @param top output Blob vector (length 1 or 2)
 *   -# @f$ () @f$ the scalar loss E
 *   -# optional, the mining (its loss_weight defaults to 0):
 *      BATCH_HARD @f$ (N \times 3) @f$, row a = (a, positive, negative), -1
 *      for both when anchor a gives no term; SEMI_HARD @f$ (P \times 3) @f$,
 *      one row (a, p, negative) per ordered positive pair in increasing
 *      (a, p), negative -1 when a has no negative (P is counted from the
 *      labels at Reshape); BATCH_ALL @f$ (1 \times 1) @f$ the number of terms
 *      with @f$ \ell > 0 @f$ (exact up to 2^24 in float).
 *
 * Non-finite input: a NaN or infinite feature, or features so large that a
 * squared distance could overflow (@f$ 4 \max_i \|x_i\|^2 @f$ not finite),
 * make E = NaN and every gradient element NaN, with no triplet mined (-1 in
 * the second top; BATCH_ALL: -1).
 *
 * Parameters: triplet_loss_param { margin soft_margin squared mining eps }.
 * Requires 1 <= N <= 46339 (N x N blobs and an N^2 + 2N scratch),
 * finite integer class ids, margin >= 0 and eps > 0, each finite also once
 * rounded to Dtype (caffe_mining::TripletOptions::validate, the check the
 * Python bindings make too).
 */
template <typename Dtype>
class TripletLossLayer : public LossLayer<Dtype> {
 public:
  explicit TripletLossLayer(const LayerParameter& param)
      : LossLayer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "TripletLoss"; }
  virtual inline int ExactNumBottomBlobs() const { return 2; }
  virtual inline int ExactNumTopBlobs() const { return -1; }
  virtual inline int MinTopBlobs() const { return 1; }
  virtual inline int MaxTopBlobs() const { return 2; }
  /// The embedding takes a gradient; the label does not.
  virtual inline bool AllowForceBackward(const int bottom_index) const {
    return bottom_index == 0;
  }

 protected:
  /// @copydoc TripletLossLayer
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  /// The core's buffers, on the host or (on_gpu) on the device.
  caffe_mining::TripletMining<Dtype> Mining(bool on_gpu);
  /// Fails, naming the index, on a label that is not a finite integer.
  void CheckLabels(const Blob<Dtype>& label) const;
  /// The second top from the host copies of the decisions.
  void WriteMining(const Dtype* labels, Blob<Dtype>* top);

  caffe_mining::TripletOptions options_;
  Blob<Dtype> dist_;           ///< N x N distances
  Blob<Dtype> weight_;         ///< N x N d(anchor a's terms)/d d_aj
  Blob<Dtype> row_loss_;       ///< N: each anchor's sum of terms
  Blob<Dtype> scratch_;        ///< core workspace (norms, the backward's S)
  Blob<int> positive_;         ///< N: BATCH_HARD positive, -1 if none
  Blob<int> negative_;         ///< N: BATCH_HARD negative, -1 if none
  Blob<int> pair_negative_;    ///< N x N: SEMI_HARD negative of pair (a, p)
  shared_ptr<SyncedMemory> row_terms_;  ///< N long long: terms per anchor
  shared_ptr<SyncedMemory> terms_;      ///< 1 long long: T (-1: not finite)
};

}  // namespace caffe

#endif  // CAFFE_TRIPLET_LOSS_LAYER_HPP_
