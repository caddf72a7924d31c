#ifndef CAFFE_MINING_CONTRASTIVE_LOSS_LAYER_HPP_
#define CAFFE_MINING_CONTRASTIVE_LOSS_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"
#include "caffe/syncedmem.hpp"

#include "caffe/layers/loss_layer.hpp"
#include "caffe_mining/contrastive_mining.hpp"

namespace caffe {

/**
 * @brief The contrastive loss of Hadsell et al. (2006), as ContrastiveLossLayer computes it, over only the
 *        hardest @f$ K = \lfloor N / r \rfloor @f$ of the @f$ N @f$ pairs of the batch
 *        (@f$ r @f$ = contrastive_loss_param.mining_ratio): @f$
 *          E = \frac{1}{2K} \sum\limits_{n \in P} y_n d_n^2 +
 *              \left(1-y_n\right) \max \left(m - d_n, 0\right)^2
 *        @f$ where @f$ d_n = \left| \left| a_n - b_n \right| \right|_2 @f$, @f$ m @f$ = margin and
 *        @f$ P @f$ is the set of the @f$ K @f$ picked pairs. With legacy_version the dissimilar cost
 *        is @f$ \max(m - d_n^2, 0) @f$, as in ContrastiveLossLayer.
 *
 * Mining rule: the hardness of a pair is its cost. The K picks alternate between the hardest remaining
 * similar pair and the hardest remaining dissimilar pair, starting with a similar one, so that
 * @f$ \lceil K/2 \rceil @f$ are similar and @f$ \lfloor K/2 \rfloor @f$ dissimilar; when a kind runs
 * out the other fills the rest. Equal costs go to the lower index, so the choice is deterministic.
 * Unpicked pairs contribute nothing and get zero gradient.
 *
 * - mining_ratio = 1: ContrastiveLossLayer's loss and gradients (same formulas, including its
 *   @f$ 10^{-4} @f$ guard: the non-legacy dissimilar gradient uses @f$ (m - d)/(d + 10^{-4}) @f$), equal
 *   to rounding: @f$ d_n^2 @f$ is summed in one fixed order (caffe_mining/distances/squared_norm.hpp), not by
 *   BLAS's dot, whose rounding follows the row's alignment, so that identical pairs have identical
 *   costs and the tie rule holds.
 * - Non-finite input: when any pair's @f$ d_n^2 @f$ is NaN or infinite (a NaN or inf feature, or an
 *   overflowing difference), E = NaN and every gradient element is NaN, picked or not.
 * - Requires N >= 1 pairs of D >= 1 values, mining_ratio >= 1 and a finite margin (also once rounded
 *   to Dtype): caffe_mining::ContrastiveOptions::validate, the check the Python bindings make too.
 * - mining_ratio > N: K = 0, the loss is 0 and the gradients are 0; one warning per layer instance.
 * - Divergences from the original MiningContrastiveLoss (seed 000): its backward divided by N instead
 *   of by the 2K of the forward, so its gradient was not that of its loss; here the backward is the
 *   gradient of E. Caffe's own legacy GPU backward drops the @f$ (a_n - b_n) @f$ factor; here both
 *   paths share one formula.
 * - Selection is O(N) on both paths (nth_element on the CPU, a device radix select on the GPU; no
 *   copy of the costs to the host). The math is in the Caffe-free core caffe_mining/contrastive_mining.hpp.
 *
 * @param bottom input Blob vector (length 3)
 *   -# @f$ (N \times D) @f$ or @f$ (N \times D \times 1 \times 1) @f$
 *      the features @f$ a \in [-\infty, +\infty]@f$
 *   -# the same shape as bottom[0]
 *      the features @f$ b \in [-\infty, +\infty]@f$
 *   -# @f$ N @f$ values, e.g. @f$ (N \times 1 \times 1 \times 1) @f$
 *      the similarity @f$ y \in \{0, 1\} @f$ (1 = similar); any other value is an error
 * @param top output Blob vector (length 1)
 *   -# @f$ (1) @f$, a scalar: the loss @f$ E @f$
 */
template <typename Dtype>
class MiningContrastiveLossLayer : public LossLayer<Dtype> {
 public:
  explicit MiningContrastiveLossLayer(const LayerParameter& param)
      : LossLayer<Dtype>(param), num_picked_(0), warned_no_pairs_(false) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline int ExactNumBottomBlobs() const { return 3; }
  virtual inline const char* type() const { return "MiningContrastiveLoss"; }
  /// Gradients flow to both features, never to the similarity labels.
  virtual inline bool AllowForceBackward(const int bottom_index) const {
    return bottom_index != 2;
  }

  /// K, the number of pairs the current batch size keeps.
  int num_picked() const { return num_picked_; }
  /// After Forward: 1 for each picked pair, 0 otherwise (N values).
  const Blob<int>& picked() const { return picked_; }

 protected:
  /// @copydoc MiningContrastiveLossLayer
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  /**
   * @brief Gradient of @f$ \lambda E @f$ (@f$ \lambda @f$ = top diff, the loss weight) w.r.t. a and b:
   *        @f$ \frac{\partial}{\partial a_n} = -\frac{\partial}{\partial b_n} = \frac{\lambda}{K} g_n
   *        (a_n - b_n) @f$ for picked pairs, 0 for the others, with @f$ g_n = 1 @f$ (similar),
   *        @f$ -[m - d_n^2 > 0] @f$ (legacy dissimilar) or
   *        @f$ -[m - d_n > 0] \, (m - d_n)/(d_n + 10^{-4}) @f$ (dissimilar).
   *        Backpropagating to the labels (bottom[2]) is an error.
   */
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  /// CHECK-fails naming the first label that is not 0 or 1 (first_invalid < 0 or == N: all valid).
  void CheckLabels(const Blob<Dtype>& sim, int first_invalid) const;
  /// The core's per-pair buffers, on the host or (on_gpu) on the device.
  caffe_mining::ContrastivePairs<Dtype> Pairs(bool on_gpu);

  caffe_mining::ContrastiveOptions options_;  // contrastive_loss_param
  int num_picked_;        // K for the current batch size
  bool warned_no_pairs_;  // the K = 0 warning is given once per layer instance

  Blob<Dtype> diff_;      // a - b, N x D, cached for backward
  Blob<Dtype> dist_sq_;   // ||a - b||^2, N, cached for backward
  Blob<Dtype> cost_;      // per-pair cost, N
  Blob<int> picked_;      // 1 for picked pairs, N, cached for backward
  shared_ptr<SyncedMemory> cpu_workspace_;  // workspace of contrastive_*_cpu
  shared_ptr<SyncedMemory> gpu_workspace_;  // workspace of contrastive_*_gpu (selection, non-finite flags)
  shared_ptr<SyncedMemory> first_invalid_label_;  // one int written by find_invalid_label_gpu
};

}  // namespace caffe

#endif  // CAFFE_MINING_CONTRASTIVE_LOSS_LAYER_HPP_
