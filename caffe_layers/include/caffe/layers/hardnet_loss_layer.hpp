#ifndef CAFFE_HARDNET_LOSS_LAYER_HPP_
#define CAFFE_HARDNET_LOSS_LAYER_HPP_

#include <random>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

#include "caffe/layers/loss_layer.hpp"
#include "caffe_mining/hardnet.hpp"

namespace caffe {

/**
 * @brief The HardNet loss (Mishchuk et al. 2017, "Working hard to know your
 *        neighbor's margins"): a triplet loss whose negative for each
 *        matching pair (a_i, p_i) is mined inside the batch,
 *        @f$ E = \frac{1}{R} \sum_{i \in \mathcal{R}}
 *            \ell\left(d_{ii}, \min_{j \in \mathcal{N}_i} c_{ij}\right) @f$
 *        with (defaults: margin @f$ m = 1 @f$, TRIPLET_MARGIN, MIN)
 *        @f$ d_{ij} = \sqrt{\max(\|a_i\|^2 + \|p_j\|^2 - 2 a_i^\top p_j, 0)
 *            + \epsilon} @f$ (one GEMM for the whole batch).
 *
 * Candidates: @f$ d_{ij} @f$ is a valid negative of row i when
 * @f$ j \ne i @f$, @f$ d_{ij} \ge @f$ duplicate_threshold (0.008) and, when the
 * label bottom is given, @f$ y_i \ne y_j @f$. Candidate j of row i has the
 * value @f$ c_{ij} = d_{ij} @f$; with anchor_swap,
 * @f$ c_{ij} = \min(d_{ij}, d_{ji}) @f$ over the valid ones of the two
 * (@f$ d_{ji} @f$: anchor j against positive i; at equal value @f$ d_{ij} @f$
 * is kept). @f$ \mathcal{N}_i @f$ = the valid
 * candidates of row i, @f$ \mathcal{R} @f$ = the rows with at least one,
 * @f$ R = |\mathcal{R}| @f$; E = 0 (and zero gradients) when R = 0.
 *
 * Row loss @f$ \ell(d^+, d^-) @f$ (loss_type):
 *   - TRIPLET_MARGIN: @f$ \max(m + d^+ - d^-, 0) @f$
 *   - SOFTMAX: @f$ -\log \frac{e^{2 - d^+}}{e^{2 - d^+} + e^{2 - d^-}}
 *     = \log(1 + e^{d^+ - d^-}) @f$ (computed in the stable second form)
 *   - CONTRASTIVE: @f$ \max(m - d^-, 0) + d^+ @f$
 *
 * Mining (batch_reduce):
 *   - MIN: the smallest @f$ c_{ij} @f$ (ties: lowest j).
 *   - AVERAGE: @f$ \frac{1}{|\mathcal{N}_i|} \sum_{j \in \mathcal{N}_i}
 *     \ell(d_{ii}, c_{ij}) @f$ replaces the row's term.
 *   - RANDOM: the candidate of rank @f$ \lfloor u_i |\mathcal{N}_i| \rfloor @f$
 *     among the valid ones in increasing j, with
 *     @f$ u_i = (x_i \gg 8) / 2^{24} @f$, @f$ x_i @f$ the next output of a
 *     std::mt19937 seeded once at set-up from `seed` (if set, else from
 *     Caffe's RNG), n draws per forward pass in row order, drawn on the host
 *     so that CPU and GPU pick the same negatives.
 *
 * Backward is the exact gradient of E (0 at the hinges' kinks and at ties'
 * non-chosen candidates). MIN/RANDOM: O(N D) after the forward GEMM, each row
 * touching its pair and its one negative; AVERAGE: two N x N x D GEMMs.
 *
 * Divergences from the authors' PyTorch code (loss_HardNet):
 *   - the squared distance is clamped at 0 before eps is added inside the
 *     square root (theirs can take the root of a rounding-negative value:
 *     NaN); their extra +1e-8 after the root is dropped;
 *   - the diagonal and duplicates are excluded from the mining (theirs adds
 *     10 to them), label masking is added, and a row without any valid
 *     negative is left out of the mean (theirs would use d + 10);
 *   - SOFTMAX has no +1e-8 in its denominator;
 *   - AVERAGE averages each row over its valid negatives with that row's
 *     positive distance (theirs averages all N^2 entries, diagonal included,
 *     pairing @f$ d_{ij} @f$ with @f$ d_{jj} @f$);
 *   - RANDOM draws one valid negative per row (theirs takes column perm(i) of
 *     a random permutation, which can be the row's own positive).
 *
 * @param bottom input Blob vector (length 2 or 3)
 *   -# @f$ (N \times D) @f$ or @f$ (N \times D \times 1 \times 1) @f$
 *      the anchor descriptors @f$ a @f$
 *   -# same shape: the positive descriptors @f$ p @f$, row i matching
 *      anchor row i
 *   -# optional, N values (any shape of count N): class ids @f$ y @f$;
 *      pairs of the same class are never negatives of each other. Not
 *      differentiable.
 * @param top output Blob vector (length 1 or 2)
 *   -# @f$ () @f$ the scalar loss E
 *   -# optional @f$ (N \times 2) @f$: per row, the chosen negative j (MIN,
 *      RANDOM) or the hardest one (AVERAGE), -1 if the row has none; and 1 if
 *      its distance is the swapped @f$ d_{ji} @f$, else 0. Its loss_weight
 *      defaults to 0.
 *
 * Non-finite input: a NaN or infinite feature, or features so large that a
 * squared distance could overflow (@f$ 2(\max_i \|a_i\|^2 +
 * \max_j \|p_j\|^2) @f$ not finite), makes E = NaN and every gradient
 * element NaN, with no row mined (the second top says -1 for every row): a
 * diverged batch never reads as one without negatives.
 *
 * Parameters: hardnet_loss_param { margin anchor_swap batch_reduce loss_type
 * eps duplicate_threshold seed }. Requires 2 <= N <= 46340 (46339 with
 * AVERAGE: a blob holds at most INT_MAX elements), finite class ids, and
 * margin >= 0, eps > 0, duplicate_threshold >= 0, each finite also once
 * rounded to Dtype (caffe_mining::HardNetOptions::validate, the check the
 * Python bindings make too).
 */
template <typename Dtype>
class HardNetLossLayer : public LossLayer<Dtype> {
 public:
  explicit HardNetLossLayer(const LayerParameter& param)
      : LossLayer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "HardNetLoss"; }
  virtual inline int ExactNumBottomBlobs() const { return -1; }
  virtual inline int MinBottomBlobs() const { return 2; }
  virtual inline int MaxBottomBlobs() const { return 3; }
  virtual inline int ExactNumTopBlobs() const { return -1; }
  virtual inline int MinTopBlobs() const { return 1; }
  virtual inline int MaxTopBlobs() const { return 2; }
  /// Anchor and positive take gradients; the label does not.
  virtual inline bool AllowForceBackward(const int bottom_index) const {
    return bottom_index < 2;
  }

 protected:
  /// @copydoc HardNetLossLayer
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  /// The core's per-row buffers, on the host or (on_gpu) on the device.
  caffe_mining::HardNetMining<Dtype> Mining(bool on_gpu);
  /// Fails, naming the index, on a label that is not finite (read on the host).
  void CheckLabels(const Blob<Dtype>& label) const;
  /// Fills uniforms_ (host) with the next N draws (RANDOM only).
  void DrawUniforms(int num);

  caffe_mining::HardNetOptions options_;
  std::mt19937 random_engine_;
  Blob<Dtype> dist_;        ///< N x N distances d_ij (the core's work matrix, see HardNetMining::dist)
  Blob<Dtype> pos_dist_;    ///< N: d_ii
  Blob<Dtype> neg_dist_;    ///< N: the chosen candidate's value
  Blob<Dtype> row_loss_;    ///< N: each row's loss
  Blob<Dtype> dloss_dpos_;  ///< N: d row loss / d d_ii
  Blob<Dtype> dloss_dneg_;  ///< N: d row loss / d chosen candidate
  Blob<Dtype> uniforms_;    ///< N: RANDOM draws
  Blob<Dtype> scratch_;     ///< core workspace (norms; AVERAGE: N x N)
  Blob<int> neg_index_;     ///< N: chosen j, -1 if none
  Blob<int> neg_swapped_;   ///< N: 1 if the value is d_ji
  Blob<int> neg_count_;     ///< N: number of valid candidates
  Blob<int> valid_rows_;    ///< 1: R
};

}  // namespace caffe

#endif  // CAFFE_HARDNET_LOSS_LAYER_HPP_
