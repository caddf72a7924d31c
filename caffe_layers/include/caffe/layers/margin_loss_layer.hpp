#ifndef CAFFE_MARGIN_LOSS_LAYER_HPP_
#define CAFFE_MARGIN_LOSS_LAYER_HPP_

#include <stdint.h>

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

#include "caffe/layers/loss_layer.hpp"
#include "caffe_mining/margin.hpp"

namespace caffe {

/**
 * @brief The margin loss with distance-weighted sampling and a learnable
 *        boundary @f$ \beta @f$ ("Sampling Matters in Deep Embedding
 *        Learning", Wu et al. 2017):
 *        @f$ E = \frac{1}{C} \sum_{t = (a, p, n)}
 *            (d_{ap} - \beta_{c(a)} + \alpha)_+
 *          + (\beta_{c(a)} - d_{an} + \alpha)_+ + \nu \beta_{c(a)} @f$
 *        over triplets sampled in the batch, with
 *        @f$ d_{ij} = \sqrt{\|x_i - x_j\|^2 + \epsilon} @f$,
 *        @f$ \alpha @f$ = margin (0.2), @f$ C @f$ the number of non-zero
 *        hinge terms (E = 0 and zero gradients when C = 0), @f$ c(a) = y_a @f$
 *        with num_classes > 0, else 0.
 *
 * Sampling: for every anchor a and every positive p of a (same label,
 * p != a), negatives_per_positive (1) negatives are drawn with replacement
 * from a's row of weights over the samples of other labels:
 *   - DISTANCE_WEIGHTED (default): @f$ w_{an} \propto 1 / q(\hat d_{an}) @f$,
 *     @f$ q(d) \propto d^{D-2} (1 - d^2/4)^{(D-3)/2} @f$ (the density of
 *     distances between uniform points on the unit sphere of @f$ R^D @f$),
 *     @f$ \hat d = \max(d, @f$ cutoff (0.5)@f$) @f$, and @f$ w = 0 @f$ where
 *     @f$ d \ge @f$ nonzero_loss_cutoff (1.4; <= 0 disables); computed in
 *     double as log weights minus the row's maximum;
 *   - UNIFORM: @f$ w_{an} = 1 @f$ (the paper's baseline).
 * An anchor with no positive, or no negative of non-zero weight, gives no
 * triplet. The draw u of (a, p, r) is Philox4x32-10 of the counter
 * (a, p, r, pass) under the key `seed` (caffe_mining/common/philox.hpp), pass
 * = the number of forward passes this layer has run since set-up (a restart
 * from a snapshot starts over at 0), so the CPU and the GPU draw the same
 * triplets; the negative is the first n whose cumulative weight exceeds
 * u times the row's total. The rule in full, and the shared code, are in
 * caffe_mining/margin.hpp.
 *
 * Backward: the exact gradient of E given this pass's triplets (the draw is
 * not differentiated), to the embedding and to @f$ \beta @f$:
 * @f$ \partial E / \partial \beta_c = \frac{1}{C} \sum_{t: c(a) = c}
 *     (-[d_{ap} - \beta + \alpha > 0] + [\beta - d_{an} + \alpha > 0] + \nu) @f$.
 *
 * beta is the layer's parameter blob (blobs_[0]: one value, or num_classes
 * values), filled with beta_init (1.2) at set-up and learnt by the solver.
 * Give it its own rate and no weight decay, `param { lr_mult: M decay_mult: 0 }`.
 * Working default: M * base_lr = 0.1 / N (N the batch size), the step the
 * MXNet code really takes: its beta rate 0.1 is divided by the batch size by
 * its optimizer (rescale_grad = 1/N), so copying 0.1 into Caffe's SGD as
 * M * base_lr makes beta's steps N times (about 70 times) too large. With
 * base_lr 0.01 and N = 100: lr_mult 0.1.
 *
 * Divergences from the paper and from its MXNet code
 * (example/gluon/embedding_learning):
 *   - log weights with a per-row maximum: the code's single maximum over the
 *     batch underflows whole rows to 0 at D = 128 (e^-91 in float32), after
 *     which those anchors were sampled uniformly;
 *   - @f$ \log(1 - \hat d^2/4) @f$ floored at log(1e-12) instead of -inf/NaN
 *     when rounding (or rows off the unit sphere) gives @f$ \hat d \ge 2 @f$;
 *   - an anchor without positives or drawable negatives gives no triplet (the
 *     code drew uniformly from the whole batch, itself and its positives
 *     included);
 *   - C = 0 gives E = 0 and zero gradients (the code divides by zero);
 *   - draws from a counter-based generator keyed by seed and pass (not a
 *     global numpy state); the sampler's distances are the loss's (never
 *     negative by rounding);
 *   - no normalisation inside: the embedding must be L2-normalised by the net
 *     (the layer warns when a row of the first batch has a norm off 1 by more
 *     than 1e-3).
 *
 * @param bottom input Blob vector (length 2)
 *   -# @f$ (N \times D) @f$ or @f$ (N \times D \times 1 \times 1) @f$ the
 *      embeddings @f$ x @f$, L2-normalised rows; N >= 2
 *   -# N integer class ids @f$ y @f$ (any shape of count N; in
 *      [0, num_classes) when num_classes > 0). Not differentiable. Batches
 *      are meant to hold several classes of several samples each.
 * @param top output Blob vector (length 1 or 2)
 *   -# @f$ () @f$ the scalar loss E
 *   -# optional @f$ (T \times 3) @f$: this pass's triplets (anchor, positive,
 *      negative) in order of (anchor, positive, draw), reshaped every
 *      forward (T = 0 rows when none). Its loss_weight defaults to 0.
 *
 * Non-finite input: a NaN or infinite embedding value or beta, or a distance
 * that overflows, gives E = NaN, no triplet and NaN in every gradient element
 * (embedding and beta).
 *
 * Parameters: margin_loss_param { margin beta_init nu num_classes
 * negatives_per_positive sampler cutoff nonzero_loss_cutoff eps seed }, checked
 * at set-up by caffe_mining::MarginOptions::validate (the check the Python
 * bindings make too): margin >= 0, nu >= 0, num_classes >= 0,
 * negatives_per_positive >= 1, cutoff > 0, eps > 0, all finite.
 */
template <typename Dtype>
class MarginLossLayer : public LossLayer<Dtype> {
 public:
  explicit MarginLossLayer(const LayerParameter& param)
      : LossLayer<Dtype>(param), passes_(0), checked_norm_(false) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "MarginLoss"; }
  virtual inline int ExactNumBottomBlobs() const { return 2; }
  virtual inline int ExactNumTopBlobs() const { return -1; }
  virtual inline int MinTopBlobs() const { return 1; }
  virtual inline int MaxTopBlobs() const { return 2; }
  /// The embedding takes gradients; the label does not.
  virtual inline bool AllowForceBackward(const int bottom_index) const {
    return bottom_index == 0;
  }

 protected:
  /// @copydoc MarginLossLayer
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  /// Checks the labels (host), sizes the triplet buffers for them and
  /// returns their capacity; at the first pass, warns about rows that are
  /// not unit norm.
  int Prepare(const vector<Blob<Dtype>*>& bottom);
  /// The core's triplet buffers, on the host or (on_gpu) on the device.
  caffe_mining::MarginMining<Dtype> Mining(bool on_gpu);
  /// top[1] = the first T triplets (host copy of the counts).
  void WriteTriplets(const vector<Blob<Dtype>*>& top, bool on_gpu);

  caffe_mining::MarginOptions options_;
  uint64_t passes_;         ///< forward passes since set-up: the draws' key
  bool checked_norm_;       ///< the first batch's norms were looked at
  Blob<int> triplets_;      ///< capacity x 3
  Blob<Dtype> pos_dist_;    ///< capacity: d_ap
  Blob<Dtype> neg_dist_;    ///< capacity: d_an
  Blob<int> anchor_count_;  ///< N
  Blob<int> anchor_offset_; ///< N
  Blob<int> counts_;        ///< 2: T (-1: non-finite input) and C
  Blob<Dtype> beta_diff_;   ///< B: the core's beta gradient, added to blobs_[0]
  Blob<double> workspace_;  ///< margin_workspace_bytes (doubles: 8-byte aligned)
};

}  // namespace caffe

#endif  // CAFFE_MARGIN_LOSS_LAYER_HPP_
