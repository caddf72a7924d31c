#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/contrastive_loss_layer.hpp"
#include "caffe/layers/mining_contrastive_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe_mining/contrastive_mining.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

// propagate_down for Backward: both features, not the labels.
inline vector<bool> FeaturesOnly() {
  vector<bool> propagate_down(3, true);
  propagate_down[2] = false;
  return propagate_down;
}

// Slow, obviously-correct reference: per-pair costs by the formula, each pair's rank within its kind by
// counting the harder pairs, then the K picks made one by one, alternating similar / dissimilar.
struct MiningReference {
  double loss;
  vector<int> picked;
};

template <typename Dtype>
MiningReference ReferenceMiningContrastive(const Blob<Dtype>& a, const Blob<Dtype>& b,
    const Blob<Dtype>& sim, Dtype margin, bool legacy, int mining_ratio) {
  const int num = a.shape(0);
  const int dim = a.count(1);
  vector<Dtype> cost(num);
  for (int i = 0; i < num; ++i) {
    Dtype dist_sq(0);
    for (int j = 0; j < dim; ++j) {
      const Dtype d = a.cpu_data()[i * dim + j] - b.cpu_data()[i * dim + j];
      dist_sq += d * d;
    }
    if (sim.cpu_data()[i] == Dtype(1)) {
      cost[i] = dist_sq;
    } else if (legacy) {
      cost[i] = std::max(margin - dist_sq, Dtype(0));
    } else {
      const Dtype hinge = std::max(margin - std::sqrt(dist_sq), Dtype(0));
      cost[i] = hinge * hinge;
    }
  }
  // by_hardness[kind][r] = index of the pair of that kind with r harder pairs of its kind.
  vector<vector<int> > by_hardness(2);
  for (int kind = 0; kind < 2; ++kind) {
    vector<int> members;
    for (int i = 0; i < num; ++i) {
      if (sim.cpu_data()[i] == Dtype(kind)) members.push_back(i);
    }
    by_hardness[kind].resize(members.size());
    for (size_t p = 0; p < members.size(); ++p) {
      const int i = members[p];
      int harder = 0;
      for (size_t q = 0; q < members.size(); ++q) {
        const int j = members[q];
        if (cost[j] > cost[i] || (cost[j] == cost[i] && j < i)) ++harder;
      }
      by_hardness[kind][harder] = i;
    }
  }
  const int num_picked = num / mining_ratio;
  MiningReference ref;
  ref.picked.assign(num, 0);
  double sum = 0;
  size_t next[2] = {0, 0};
  int turn = 1;  // similar first
  for (int t = 0; t < num_picked; ++t) {
    const int kind = next[turn] < by_hardness[turn].size() ? turn : 1 - turn;
    const int i = by_hardness[kind][next[kind]++];
    ref.picked[i] = 1;
    sum += cost[i];
    turn = 1 - turn;
  }
  ref.loss = num_picked > 0 ? sum / (2.0 * num_picked) : 0.0;
  return ref;
}

template <typename TypeParam>
class MiningContrastiveLossLayerTest : public MultiDeviceTest<TypeParam> {
 protected:
  typedef typename TypeParam::Dtype Dtype;

  MiningContrastiveLossLayerTest()
      : blob_bottom_a_(new Blob<Dtype>()),
        blob_bottom_b_(new Blob<Dtype>()),
        blob_bottom_sim_(new Blob<Dtype>()),
        blob_top_loss_(new Blob<Dtype>()) {
    Caffe::set_random_seed(1701);
    blob_bottom_vec_.push_back(blob_bottom_a_);
    blob_bottom_vec_.push_back(blob_bottom_b_);
    blob_bottom_vec_.push_back(blob_bottom_sim_);
    blob_top_vec_.push_back(blob_top_loss_);
  }
  virtual ~MiningContrastiveLossLayerTest() {
    delete blob_bottom_a_;
    delete blob_bottom_b_;
    delete blob_bottom_sim_;
    delete blob_top_loss_;
  }

  static LayerParameter MakeParam(int mining_ratio, bool legacy, float margin = 1.0f) {
    LayerParameter param;
    param.mutable_contrastive_loss_param()->set_mining_ratio(mining_ratio);
    param.mutable_contrastive_loss_param()->set_legacy_version(legacy);
    param.mutable_contrastive_loss_param()->set_margin(margin);
    return param;
  }

  void ShapeBatch(int num, int dim, bool four_axes) {
    vector<int> feat_shape(2);
    feat_shape[0] = num;
    feat_shape[1] = dim;
    if (four_axes) feat_shape.resize(4, 1);
    blob_bottom_a_->Reshape(feat_shape);
    blob_bottom_b_->Reshape(feat_shape);
    blob_bottom_sim_->Reshape(num, 1, 1, 1);
  }

  // Pair i: a_i = (0.5 * (i % 3), -0.25, 0...), b_i = a_i + (dist[i], 0, ...). With dyadic distances all
  // arithmetic is exact, so equal distances give exactly equal costs (ties).
  void SetAxisPairs(int dim, const vector<Dtype>& dist, const vector<int>& sim) {
    const int num = dist.size();
    ShapeBatch(num, dim, true);
    Dtype* a = blob_bottom_a_->mutable_cpu_data();
    Dtype* b = blob_bottom_b_->mutable_cpu_data();
    for (int i = 0; i < num; ++i) {
      for (int j = 0; j < dim; ++j) {
        a[i * dim + j] = j == 0 ? Dtype(0.5) * (i % 3) : Dtype(-0.25);
        b[i * dim + j] = a[i * dim + j] + (j == 0 ? dist[i] : Dtype(0));
      }
      blob_bottom_sim_->mutable_cpu_data()[i] = sim[i];
    }
  }

  // Pair i: a_i uniform in [-1, 1]^dim, b_i = a_i + dist[i] * (random unit vector): generic directions
  // with chosen distances, for gradient checks away from every kink.
  void SetGenericPairs(int dim, const vector<Dtype>& dist, const vector<int>& sim) {
    const int num = dist.size();
    ShapeBatch(num, dim, true);
    FillerParameter uniform_param;
    uniform_param.set_min(-1);
    uniform_param.set_max(1);
    UniformFiller<Dtype> uniform(uniform_param);
    uniform.Fill(blob_bottom_a_);
    uniform.Fill(blob_bottom_b_);  // used as the random directions
    const Dtype* a = blob_bottom_a_->cpu_data();
    Dtype* b = blob_bottom_b_->mutable_cpu_data();
    for (int i = 0; i < num; ++i) {
      Dtype norm(0);
      for (int j = 0; j < dim; ++j) norm += b[i * dim + j] * b[i * dim + j];
      norm = std::sqrt(norm);
      for (int j = 0; j < dim; ++j) {
        b[i * dim + j] = a[i * dim + j] + dist[i] * b[i * dim + j] / norm;
      }
      blob_bottom_sim_->mutable_cpu_data()[i] = sim[i];
    }
  }

  // Features uniform in [-1, 1] (distances on both sides of margin 1), labels random 0/1.
  void SetRandomBatch(int num, int dim, bool four_axes) {
    ShapeBatch(num, dim, four_axes);
    FillerParameter uniform_param;
    uniform_param.set_min(-1);
    uniform_param.set_max(1);
    UniformFiller<Dtype> uniform(uniform_param);
    uniform.Fill(blob_bottom_a_);
    uniform.Fill(blob_bottom_b_);
    for (int i = 0; i < num; ++i) {
      blob_bottom_sim_->mutable_cpu_data()[i] = caffe_rng_rand() % 2;
    }
  }

  // Features in {-1, -0.5, 0, 0.5, 1}: exact arithmetic, many equal costs.
  void SetCoarseBatch(int num, int dim) {
    ShapeBatch(num, dim, false);
    for (int i = 0; i < num * dim; ++i) {
      blob_bottom_a_->mutable_cpu_data()[i] = Dtype(0.5) * (static_cast<int>(caffe_rng_rand() % 5) - 2);
      blob_bottom_b_->mutable_cpu_data()[i] = Dtype(0.5) * (static_cast<int>(caffe_rng_rand() % 5) - 2);
    }
    for (int i = 0; i < num; ++i) {
      blob_bottom_sim_->mutable_cpu_data()[i] = caffe_rng_rand() % 2;
    }
  }

  // The eight pairs of the gradient checks: kinds {1,0,0,1,1,0,1,0}; similar costs d^2 = 0.81, 0.09,
  // 1.44, 0.36; dissimilar d = 0.45, 1.3 (beyond the margin), 0.3, 0.75. Costs differ by far more than a
  // finite-difference step (1e-2) can change them and no d or d^2 is within 0.25 of the margin 1, so
  // the picked set is the same for every perturbed input and the checker never crosses a kink.
  void SetGradientBatch() {
    const Dtype dist[] = {0.9, 0.45, 1.3, 0.3, 1.2, 0.3, 0.6, 0.75};
    const int sim[] = {1, 0, 0, 1, 1, 0, 1, 0};
    SetGenericPairs(4, vector<Dtype>(dist, dist + 8), vector<int>(sim, sim + 8));
  }

  vector<int> Picked(const MiningContrastiveLossLayer<Dtype>& layer) {
    const Blob<int>& picked = layer.picked();
    return vector<int>(picked.cpu_data(), picked.cpu_data() + picked.count());
  }

  // float tolerance covers the GPU's different summation order; double is near exact.
  static Dtype Tolerance() { return sizeof(Dtype) == 4 ? Dtype(4e-6) : Dtype(1e-12); }

  void CheckForwardAgainstReference(const LayerParameter& param) {
    MiningContrastiveLossLayer<Dtype> layer(param);
    layer.SetUp(blob_bottom_vec_, blob_top_vec_);
    layer.Forward(blob_bottom_vec_, blob_top_vec_);
    const ContrastiveLossParameter& p = param.contrastive_loss_param();
    const MiningReference ref = ReferenceMiningContrastive(*blob_bottom_a_, *blob_bottom_b_,
        *blob_bottom_sim_, Dtype(p.margin()), p.legacy_version(), p.mining_ratio());
    EXPECT_NEAR(blob_top_loss_->cpu_data()[0], ref.loss,
                Tolerance() * std::max(1.0, std::fabs(ref.loss)))
        << "N = " << blob_bottom_a_->shape(0) << ", ratio = " << p.mining_ratio()
        << ", legacy = " << p.legacy_version();
    EXPECT_EQ(ref.picked, Picked(layer))
        << "N = " << blob_bottom_a_->shape(0) << ", ratio = " << p.mining_ratio()
        << ", legacy = " << p.legacy_version();
  }

  void CheckGradient(int mining_ratio, bool legacy) {
    SetGradientBatch();
    LayerParameter param = MakeParam(mining_ratio, legacy);
    MiningContrastiveLossLayer<Dtype> layer(param);
    // The checker's objective is 2E, so gradients are at most 2 (m - d) / K <= 0.7 here (K >= 2).
    // Legacy and similar costs are quadratics: central differences are exact but for rounding, ~1e-12
    // in double (threshold 1e-8) and ~1e-5 in float (step 1e-2, threshold 1e-3). The non-legacy
    // dissimilar gradient carries Caffe's (d + 1e-4) guard, a relative error 1e-4 / d <= 3.4e-4 at
    // d >= 0.3, i.e. <= 2.4e-4: the double threshold there is 5e-4. A wrong scale (e.g. 1/N instead of
    // 1/K) is off by >= 1e-2.
    const Dtype stepsize = sizeof(Dtype) == 4 ? Dtype(1e-2) : Dtype(1e-4);
    const Dtype threshold = sizeof(Dtype) == 4 ? Dtype(1e-3) : (legacy ? Dtype(1e-8) : Dtype(5e-4));
    GradientChecker<Dtype> checker(stepsize, threshold, 1701);
    checker.CheckGradientExhaustive(&layer, blob_bottom_vec_, blob_top_vec_, 0);
    checker.CheckGradientExhaustive(&layer, blob_bottom_vec_, blob_top_vec_, 1);
  }

  void CheckMatchesContrastiveLoss(bool legacy) {
    SetRandomBatch(8, 3, true);
    MiningContrastiveLossLayer<Dtype> mining(MakeParam(1, legacy));
    mining.SetUp(blob_bottom_vec_, blob_top_vec_);
    mining.Forward(blob_bottom_vec_, blob_top_vec_);
    const Dtype mining_loss = blob_top_loss_->cpu_data()[0];
    blob_top_loss_->mutable_cpu_diff()[0] = Dtype(1);
    mining.Backward(blob_top_vec_, FeaturesOnly(), blob_bottom_vec_);
    Blob<Dtype> mining_diff_a, mining_diff_b;
    mining_diff_a.CopyFrom(*blob_bottom_a_, true, true);
    mining_diff_b.CopyFrom(*blob_bottom_b_, true, true);

    // Caffe's layer on the CPU: its legacy GPU backward drops the (a - b) factor (see our header).
    const Caffe::Brew mode = Caffe::mode();
    Caffe::set_mode(Caffe::CPU);
    LayerParameter caffe_param = MakeParam(1, legacy);
    ContrastiveLossLayer<Dtype> caffe_layer(caffe_param);
    caffe_layer.SetUp(blob_bottom_vec_, blob_top_vec_);
    caffe_layer.Forward(blob_bottom_vec_, blob_top_vec_);
    blob_top_loss_->mutable_cpu_diff()[0] = Dtype(1);
    caffe_layer.Backward(blob_top_vec_, FeaturesOnly(), blob_bottom_vec_);
    Caffe::set_mode(mode);

    const Dtype caffe_loss = blob_top_loss_->cpu_data()[0];
    EXPECT_NEAR(mining_loss, caffe_loss, Tolerance() * std::max(Dtype(1), std::fabs(caffe_loss)));
    for (int i = 0; i < blob_bottom_a_->count(); ++i) {
      EXPECT_NEAR(mining_diff_a.cpu_diff()[i], blob_bottom_a_->cpu_diff()[i], Tolerance()) << i;
      EXPECT_NEAR(mining_diff_b.cpu_diff()[i], blob_bottom_b_->cpu_diff()[i], Tolerance()) << i;
    }
  }

  Blob<Dtype>* const blob_bottom_a_;
  Blob<Dtype>* const blob_bottom_b_;
  Blob<Dtype>* const blob_bottom_sim_;
  Blob<Dtype>* const blob_top_loss_;
  vector<Blob<Dtype>*> blob_bottom_vec_;
  vector<Blob<Dtype>*> blob_top_vec_;
};

TYPED_TEST_CASE(MiningContrastiveLossLayerTest, TestDtypesAndDevices);

TYPED_TEST(MiningContrastiveLossLayerTest, TestSetUp) {
  typedef typename TypeParam::Dtype Dtype;
  this->SetRandomBatch(7, 3, false);  // N x D bottoms are accepted as well as N x D x 1 x 1
  MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(3, false));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  EXPECT_EQ(0, this->blob_top_loss_->num_axes());
  EXPECT_EQ(2, layer.num_picked());  // floor(7 / 3)
  EXPECT_TRUE(layer.AllowForceBackward(0));
  EXPECT_TRUE(layer.AllowForceBackward(1));
  EXPECT_FALSE(layer.AllowForceBackward(2));
  EXPECT_STREQ("MiningContrastiveLoss", layer.type());
}

// Four pairs, margin 1, ratio 2, so K = 2: one similar and one dissimilar pair.
//   pair 0: similar,    d = 0.5, cost 0.25
//   pair 1: similar,    d = 1.0, cost 1.0          <- hardest similar
//   pair 2: dissimilar, d = 0.5, cost 0.5^2 = 0.25 (legacy 1 - 0.25 = 0.75)
//   pair 3: dissimilar, d = 0.2, cost 0.8^2 = 0.64 (legacy 1 - 0.04 = 0.96)   <- hardest dissimilar
// E = (1.0 + 0.64) / 4 = 0.41 (legacy (1.0 + 0.96) / 4 = 0.49).
// dE/da_1 = (1/K)(a_1 - b_1) = 0.5 (-0.6, -0.8);
// dE/da_3 = -(1/K)(m - d)/(d + 1e-4)(a_3 - b_3) = -0.5 * 0.8 / 0.2001 * (-0.12, -0.16)
//   (legacy: -(1/K)(a_3 - b_3) = (0.06, 0.08)); pairs 0 and 2 get 0.
template <typename Dtype>
void SetHandComputedPairs(Blob<Dtype>* a, Blob<Dtype>* b, Blob<Dtype>* sim) {
  const Dtype b_values[] = {0.3, 0.4, 0.6, 0.8, 0.3, 0.4, 0.12, 0.16};
  const Dtype sim_values[] = {1, 1, 0, 0};
  a->Reshape(4, 2, 1, 1);
  b->Reshape(4, 2, 1, 1);
  sim->Reshape(4, 1, 1, 1);
  caffe_set(8, Dtype(0), a->mutable_cpu_data());
  caffe_copy(8, b_values, b->mutable_cpu_data());
  caffe_copy(4, sim_values, sim->mutable_cpu_data());
}

TYPED_TEST(MiningContrastiveLossLayerTest, TestForwardBackwardHandComputed) {
  typedef typename TypeParam::Dtype Dtype;
  SetHandComputedPairs(this->blob_bottom_a_, this->blob_bottom_b_, this->blob_bottom_sim_);
  MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(2, false));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  EXPECT_NEAR(0.41, this->blob_top_loss_->cpu_data()[0], 1e-6);
  const int expected_picked[] = {0, 1, 0, 1};
  EXPECT_EQ(vector<int>(expected_picked, expected_picked + 4), this->Picked(layer));

  this->blob_top_loss_->mutable_cpu_diff()[0] = Dtype(1);
  layer.Backward(this->blob_top_vec_, FeaturesOnly(), this->blob_bottom_vec_);
  const double far = 0.5 * 0.8 / 0.2001;
  const double expected_a[] = {0, 0, -0.3, -0.4, 0, 0, far * 0.12, far * 0.16};
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(expected_a[i], this->blob_bottom_a_->cpu_diff()[i], 1e-6) << i;
    EXPECT_NEAR(-expected_a[i], this->blob_bottom_b_->cpu_diff()[i], 1e-6) << i;
  }
}

TYPED_TEST(MiningContrastiveLossLayerTest, TestForwardBackwardHandComputedLegacy) {
  typedef typename TypeParam::Dtype Dtype;
  SetHandComputedPairs(this->blob_bottom_a_, this->blob_bottom_b_, this->blob_bottom_sim_);
  MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(2, true));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  EXPECT_NEAR(0.49, this->blob_top_loss_->cpu_data()[0], 1e-6);
  const int expected_picked[] = {0, 1, 0, 1};
  EXPECT_EQ(vector<int>(expected_picked, expected_picked + 4), this->Picked(layer));

  this->blob_top_loss_->mutable_cpu_diff()[0] = Dtype(1);
  layer.Backward(this->blob_top_vec_, FeaturesOnly(), this->blob_bottom_vec_);
  const double expected_a[] = {0, 0, -0.3, -0.4, 0, 0, 0.06, 0.08};
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(expected_a[i], this->blob_bottom_a_->cpu_diff()[i], 1e-6) << i;
    EXPECT_NEAR(-expected_a[i], this->blob_bottom_b_->cpu_diff()[i], 1e-6) << i;
  }
}

// Eight pairs with exactly equal costs among them (margin 1):
//   index:  0     1     2       3    4     5     6     7
//   kind:   dis   sim   dis     sim  sim   dis   dis   sim
//   d:      0.5   0.5   0.25    1.0  0.5   0.5   0.5   0.5
//   cost:   0.25  0.25  0.5625  1.0  0.25  0.25  0.25  0.25
TYPED_TEST(MiningContrastiveLossLayerTest, TestTiesGoToLowerIndex) {
  typedef typename TypeParam::Dtype Dtype;
  const Dtype dist[] = {0.5, 0.5, 0.25, 1.0, 0.5, 0.5, 0.5, 0.5};
  const int sim[] = {0, 1, 0, 1, 1, 0, 0, 1};
  this->SetAxisPairs(2, vector<Dtype>(dist, dist + 8), vector<int>(sim, sim + 8));
  struct Case { int ratio; double loss; int picked[8]; };
  const Case cases[] = {
    // K = 8: everything, (6 * 0.25 + 0.5625 + 1) / 16.
    {1, 3.0625 / 16, {1, 1, 1, 1, 1, 1, 1, 1}},
    // K = 4: similar 3 then the tie {1, 4, 7} -> 1; dissimilar 2 then the tie {0, 5, 6} -> 0.
    {2, 2.0625 / 8, {1, 1, 1, 1, 0, 0, 0, 0}},
    // K = 2: the hardest of each kind.
    {3, 1.5625 / 4, {0, 0, 1, 1, 0, 0, 0, 0}},
    {4, 1.5625 / 4, {0, 0, 1, 1, 0, 0, 0, 0}},
    // K = 1: the alternation starts with a similar pair.
    {8, 1.0 / 2, {0, 0, 0, 1, 0, 0, 0, 0}},
  };
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); ++c) {
    MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(cases[c].ratio, false));
    layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
    layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
    EXPECT_NEAR(cases[c].loss, this->blob_top_loss_->cpu_data()[0], 1e-7) << "ratio " << cases[c].ratio;
    EXPECT_EQ(vector<int>(cases[c].picked, cases[c].picked + 8), this->Picked(layer))
        << "ratio " << cases[c].ratio;
  }
}

// When one kind runs out, the other kind fills the remaining picks.
TYPED_TEST(MiningContrastiveLossLayerTest, TestAlternationFillsFromOtherKind) {
  typedef typename TypeParam::Dtype Dtype;
  const Dtype dist[] = {0.125, 0.75, 0.25, 0.875, 0.5, 0.625, 0.375, 1.0};
  struct Case { int ratio; int sim[8]; int picked[8]; };
  const Case cases[] = {
    // One similar pair (5), K = 4: it, then the 3 hardest dissimilar (smallest d: 0, 2, 6).
    {2, {0, 0, 0, 0, 0, 1, 0, 0}, {1, 0, 1, 0, 0, 1, 1, 0}},
    // One dissimilar pair (5), K = 4: the 3 hardest similar (largest d: 7, 3, 1), then it.
    {2, {1, 1, 1, 1, 1, 0, 1, 1}, {0, 1, 0, 1, 0, 1, 0, 1}},
    // No similar pair, K = 2: the 2 hardest dissimilar (0, 2).
    {4, {0, 0, 0, 0, 0, 0, 0, 0}, {1, 0, 1, 0, 0, 0, 0, 0}},
    // No dissimilar pair, K = 2: the 2 hardest similar (7, 3).
    {3, {1, 1, 1, 1, 1, 1, 1, 1}, {0, 0, 0, 1, 0, 0, 0, 1}},
    // Two similar (1, 4), K = 4 -> 2 + 2: both similar, dissimilar 0 and 2.
    {2, {0, 1, 0, 0, 1, 0, 0, 0}, {1, 1, 1, 0, 1, 0, 0, 0}},
  };
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); ++c) {
    this->SetAxisPairs(3, vector<Dtype>(dist, dist + 8), vector<int>(cases[c].sim, cases[c].sim + 8));
    MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(cases[c].ratio, false));
    layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
    layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
    EXPECT_EQ(vector<int>(cases[c].picked, cases[c].picked + 8), this->Picked(layer)) << "case " << c;
    this->CheckForwardAgainstReference(this->MakeParam(cases[c].ratio, false));
  }
}

// Against the loop reference on random batches (distinct costs) and coarse batches (many ties), for
// every batch size 1..8 and ratios from 1 to beyond the batch size.
TYPED_TEST(MiningContrastiveLossLayerTest, TestForwardMatchesReference) {
  const int ratios[] = {1, 2, 3, 4, 5, 8, 9};
  for (int legacy = 0; legacy < 2; ++legacy) {
    for (int num = 1; num <= 8; ++num) {
      for (size_t r = 0; r < sizeof(ratios) / sizeof(ratios[0]); ++r) {
        this->SetRandomBatch(num, 3, true);
        this->CheckForwardAgainstReference(this->MakeParam(ratios[r], legacy, 1.0f));
        this->SetCoarseBatch(num, 2);
        this->CheckForwardAgainstReference(this->MakeParam(ratios[r], legacy, 2.0f));
      }
    }
  }
}

TYPED_TEST(MiningContrastiveLossLayerTest, TestGradientRatio1) {
  this->CheckGradient(1, false);
}

TYPED_TEST(MiningContrastiveLossLayerTest, TestGradientRatio2) {
  this->CheckGradient(2, false);
}

TYPED_TEST(MiningContrastiveLossLayerTest, TestGradientRatio3) {
  this->CheckGradient(3, false);
}

TYPED_TEST(MiningContrastiveLossLayerTest, TestGradientLegacyRatio1) {
  this->CheckGradient(1, true);
}

TYPED_TEST(MiningContrastiveLossLayerTest, TestGradientLegacyRatio2) {
  this->CheckGradient(2, true);
}

TYPED_TEST(MiningContrastiveLossLayerTest, TestGradientLegacyRatio3) {
  this->CheckGradient(3, true);
}

TYPED_TEST(MiningContrastiveLossLayerTest, TestRatio1MatchesContrastiveLoss) {
  this->CheckMatchesContrastiveLoss(false);
}

TYPED_TEST(MiningContrastiveLossLayerTest, TestRatio1MatchesContrastiveLossLegacy) {
  this->CheckMatchesContrastiveLoss(true);
}

// mining_ratio > N: K = 0, loss 0, zero gradients, and a single warning however many iterations run.
TYPED_TEST(MiningContrastiveLossLayerTest, TestRatioAboveBatchSize) {
  typedef typename TypeParam::Dtype Dtype;
  this->SetRandomBatch(5, 3, true);
  MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(6, false));
  const int stderr_threshold = FLAGS_stderrthreshold;
  FLAGS_stderrthreshold = google::GLOG_WARNING;
  testing::internal::CaptureStderr();
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  for (int iter = 0; iter < 3; ++iter) {
    caffe_set(this->blob_bottom_a_->count(), Dtype(7), this->blob_bottom_a_->mutable_cpu_diff());
    caffe_set(this->blob_bottom_b_->count(), Dtype(7), this->blob_bottom_b_->mutable_cpu_diff());
    layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
    EXPECT_EQ(Dtype(0), this->blob_top_loss_->cpu_data()[0]);
    this->blob_top_loss_->mutable_cpu_diff()[0] = Dtype(1);
    layer.Backward(this->blob_top_vec_, FeaturesOnly(), this->blob_bottom_vec_);
    for (int i = 0; i < this->blob_bottom_a_->count(); ++i) {
      EXPECT_EQ(Dtype(0), this->blob_bottom_a_->cpu_diff()[i]) << i;
      EXPECT_EQ(Dtype(0), this->blob_bottom_b_->cpu_diff()[i]) << i;
    }
  }
  const std::string log = testing::internal::GetCapturedStderr();
  FLAGS_stderrthreshold = stderr_threshold;
  EXPECT_EQ(0, layer.num_picked());
  const std::string warning = "no pair is picked";
  const size_t first = log.find(warning);
  EXPECT_NE(std::string::npos, first) << log;
  EXPECT_EQ(std::string::npos, log.find(warning, first + 1)) << log;
}

// The batch size may change between iterations (8 -> 5 -> 8): K follows it and the results equal those
// of a fresh layer on the same batch.
TYPED_TEST(MiningContrastiveLossLayerTest, TestBatchSizeChange) {
  typedef typename TypeParam::Dtype Dtype;
  const LayerParameter param = this->MakeParam(2, false);
  MiningContrastiveLossLayer<Dtype> layer(param);
  this->SetRandomBatch(8, 3, true);
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  const int sizes[] = {8, 5, 8};
  for (int s = 0; s < 3; ++s) {
    this->SetRandomBatch(sizes[s], 3, true);
    layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
    EXPECT_EQ(sizes[s] / 2, layer.num_picked());
    const Dtype loss = this->blob_top_loss_->cpu_data()[0];
    this->blob_top_loss_->mutable_cpu_diff()[0] = Dtype(1);
    layer.Backward(this->blob_top_vec_, FeaturesOnly(), this->blob_bottom_vec_);
    Blob<Dtype> diff_a;
    diff_a.CopyFrom(*this->blob_bottom_a_, true, true);

    MiningContrastiveLossLayer<Dtype> fresh(param);
    fresh.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
    fresh.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
    EXPECT_EQ(loss, this->blob_top_loss_->cpu_data()[0]) << "batch " << sizes[s];
    EXPECT_EQ(this->Picked(fresh), this->Picked(layer));
    this->blob_top_loss_->mutable_cpu_diff()[0] = Dtype(1);
    fresh.Backward(this->blob_top_vec_, FeaturesOnly(), this->blob_bottom_vec_);
    for (int i = 0; i < diff_a.count(); ++i) {
      EXPECT_EQ(this->blob_bottom_a_->cpu_diff()[i], diff_a.cpu_diff()[i]) << i;
    }
    this->CheckForwardAgainstReference(param);
  }
}

// The top diff (loss_weight) scales both bottoms' diffs; propagate_down chooses which bottom gets one.
TYPED_TEST(MiningContrastiveLossLayerTest, TestLossWeightScalesDiffs) {
  typedef typename TypeParam::Dtype Dtype;
  this->SetGradientBatch();
  MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(2, false));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  this->blob_top_loss_->mutable_cpu_diff()[0] = Dtype(1);
  layer.Backward(this->blob_top_vec_, FeaturesOnly(), this->blob_bottom_vec_);
  Blob<Dtype> unit_a, unit_b;
  unit_a.CopyFrom(*this->blob_bottom_a_, true, true);
  unit_b.CopyFrom(*this->blob_bottom_b_, true, true);

  const Dtype weight(2.5);
  caffe_set(this->blob_bottom_b_->count(), Dtype(7), this->blob_bottom_b_->mutable_cpu_diff());
  this->blob_top_loss_->mutable_cpu_diff()[0] = weight;
  vector<bool> only_a(3, false);
  only_a[0] = true;
  layer.Backward(this->blob_top_vec_, only_a, this->blob_bottom_vec_);
  int nonzero = 0;
  for (int i = 0; i < unit_a.count(); ++i) {
    EXPECT_NEAR(weight * unit_a.cpu_diff()[i], this->blob_bottom_a_->cpu_diff()[i], 1e-6) << i;
    EXPECT_EQ(Dtype(7), this->blob_bottom_b_->cpu_diff()[i]) << "bottom[1] must be left alone";
    EXPECT_EQ(-unit_a.cpu_diff()[i], unit_b.cpu_diff()[i]) << i;
    nonzero += unit_a.cpu_diff()[i] != Dtype(0);
  }
  EXPECT_EQ(4 * 4, nonzero);  // K = 4 picked pairs of dimension 4, all with an active cost
}

// Bad parameters and inputs end with a message that names the problem. Death tests re-execute the
// binary ("threadsafe") so that GPU tests do not fork a process that holds a CUDA context.
template <typename TypeParam>
class MiningContrastiveLossLayerDeathTest : public MiningContrastiveLossLayerTest<TypeParam> {
 protected:
  MiningContrastiveLossLayerDeathTest() {
    ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  }
};

TYPED_TEST_CASE(MiningContrastiveLossLayerDeathTest, TestDtypesAndDevices);

TYPED_TEST(MiningContrastiveLossLayerDeathTest, TestBadMiningRatio) {
  typedef typename TypeParam::Dtype Dtype;
  this->SetRandomBatch(4, 3, true);
  MiningContrastiveLossLayer<Dtype> zero(this->MakeParam(0, false));
  EXPECT_DEATH(zero.SetUp(this->blob_bottom_vec_, this->blob_top_vec_),
               "contrastive_loss_param.mining_ratio must be >= 1. Got: 0");
  MiningContrastiveLossLayer<Dtype> negative(this->MakeParam(-2, false));
  EXPECT_DEATH(negative.SetUp(this->blob_bottom_vec_, this->blob_top_vec_),
               "contrastive_loss_param.mining_ratio must be >= 1. Got: -2");
  LayerParameter nan_margin = this->MakeParam(1, false);
  nan_margin.mutable_contrastive_loss_param()->set_margin(NAN);
  MiningContrastiveLossLayer<Dtype> with_nan(nan_margin);
  EXPECT_DEATH(with_nan.SetUp(this->blob_bottom_vec_, this->blob_top_vec_),
               "contrastive_loss_param.margin must be finite. Got: nan");
}

// A NaN feature in a pair that is not picked still makes the loss and every gradient NaN.
TYPED_TEST(MiningContrastiveLossLayerTest, TestNonFiniteInputGivesNaN) {
  typedef typename TypeParam::Dtype Dtype;
  this->SetRandomBatch(8, 3, true);
  MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(8, false));  // K = 1
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  this->blob_bottom_a_->mutable_cpu_data()[3 * 7 + 1] = NAN;
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  EXPECT_TRUE(std::isnan(this->blob_top_loss_->cpu_data()[0]));
  this->blob_top_loss_->mutable_cpu_diff()[0] = Dtype(1);
  layer.Backward(this->blob_top_vec_, FeaturesOnly(), this->blob_bottom_vec_);
  for (int i = 0; i < this->blob_bottom_a_->count(); ++i) {
    EXPECT_TRUE(std::isnan(this->blob_bottom_a_->cpu_diff()[i])) << i;
    EXPECT_TRUE(std::isnan(this->blob_bottom_b_->cpu_diff()[i])) << i;
  }
}

TYPED_TEST(MiningContrastiveLossLayerDeathTest, TestMismatchedFeatureShapes) {
  typedef typename TypeParam::Dtype Dtype;
  this->SetRandomBatch(4, 3, true);
  this->blob_bottom_b_->Reshape(4, 2, 1, 1);
  MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(2, false));
  EXPECT_DEATH(layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_),
               "must have the same shape, got 4 3 1 1 \\(12\\) and 4 2 1 1 \\(8\\)");
  this->blob_bottom_b_->Reshape(5, 3, 1, 1);
  EXPECT_DEATH(layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_), "must have the same shape");
}

TYPED_TEST(MiningContrastiveLossLayerDeathTest, TestFeatureNotFlat) {
  typedef typename TypeParam::Dtype Dtype;
  this->SetRandomBatch(4, 3, true);
  this->blob_bottom_a_->Reshape(4, 3, 2, 1);
  this->blob_bottom_b_->Reshape(4, 3, 2, 1);
  MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(2, false));
  EXPECT_DEATH(layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_),
               "must be N x D or N x D x 1 x 1, got 4 3 2 1");
}

TYPED_TEST(MiningContrastiveLossLayerDeathTest, TestWrongSimCount) {
  typedef typename TypeParam::Dtype Dtype;
  this->SetRandomBatch(4, 3, true);
  this->blob_bottom_sim_->Reshape(5, 1, 1, 1);
  MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(2, false));
  EXPECT_DEATH(layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_),
               "one 0/1 label per pair, N = 4 values");
}

TYPED_TEST(MiningContrastiveLossLayerDeathTest, TestBadLabel) {
  typedef typename TypeParam::Dtype Dtype;
  this->SetRandomBatch(6, 3, true);
  MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(2, false));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  this->blob_bottom_sim_->mutable_cpu_data()[3] = Dtype(2);
  EXPECT_DEATH(layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_),
               "must be 0 \\(dissimilar\\) or 1 \\(similar\\), got 2 at index 3");
  this->blob_bottom_sim_->mutable_cpu_data()[3] = Dtype(1);
  this->blob_bottom_sim_->mutable_cpu_data()[4] = Dtype(0.5);
  EXPECT_DEATH(layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_), "got 0.5 at index 4");
}

TYPED_TEST(MiningContrastiveLossLayerDeathTest, TestBackwardToLabels) {
  typedef typename TypeParam::Dtype Dtype;
  this->SetRandomBatch(6, 3, true);
  MiningContrastiveLossLayer<Dtype> layer(this->MakeParam(2, false));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  EXPECT_DEATH(layer.Backward(this->blob_top_vec_, vector<bool>(3, true), this->blob_bottom_vec_),
               "cannot backpropagate to the sim labels");
}

// The GPU's radix selection, run serially with the header's radix:: steps, picks exactly the pairs the
// CPU's nth_element picks: covers the device selection logic on machines without a GPU.
template <typename Dtype>
class MiningContrastiveRadixSelectTest : public ::testing::Test {
 protected:
  // Emulates digit_histogram_kernel + choose_digit_kernel per pass and mark_picked_kernel at the end.
  static vector<int> RadixPicked(const vector<Dtype>& sim, const vector<Dtype>& cost, int num_picked) {
    namespace radix = caffe_mining::radix;
    const int num = sim.size();
    int num_similar = 0;
    for (int i = 0; i < num; ++i) num_similar += sim[i] != Dtype(0);
    int k_similar, k_dissimilar;
    caffe_mining::split_picked_pairs(num_similar, num - num_similar, num_picked, &k_similar,
                                     &k_dissimilar);
    radix::KindSelection kind[2];
    radix::start(&kind[0], k_dissimilar);
    radix::start(&kind[1], k_similar);
    const int key_bytes = sizeof(Dtype);
    const int index_bytes = radix::index_bytes_for(num);
    for (int pass = 0; pass < key_bytes + index_bytes; ++pass) {
      vector<unsigned int> histogram(2 * radix::kBins, 0);
      for (int i = 0; i < num; ++i) {
        const int c = sim[i] != Dtype(0);
        if (kind[c].remaining <= 0) continue;
        const uint64_t key = caffe_mining::hardness_key(cost[i]);
        const uint32_t inv = radix::inverted_index(i, index_bytes);
        if (!radix::matches_prefix(kind[c], key, inv)) continue;
        ++histogram[c * radix::kBins + radix::composite_digit(key, inv, pass, key_bytes, index_bytes)];
      }
      for (int c = 0; c < 2; ++c) {
        radix::choose_digit(&kind[c], &histogram[c * radix::kBins], pass, key_bytes, index_bytes);
      }
    }
    vector<int> picked(num);
    for (int i = 0; i < num; ++i) {
      picked[i] = radix::at_least_threshold(kind[sim[i] != Dtype(0)],
          caffe_mining::hardness_key(cost[i]), radix::inverted_index(i, index_bytes));
    }
    return picked;
  }
};

TYPED_TEST_CASE(MiningContrastiveRadixSelectTest, TestDtypes);

TYPED_TEST(MiningContrastiveRadixSelectTest, TestMatchesCpuSelection) {
  typedef TypeParam Dtype;
  Caffe::set_random_seed(1701);
  // Sizes cross the 1-, 2- and 3-byte index widths; few distinct values make many ties.
  const int sizes[] = {1, 2, 7, 8, 255, 256, 257, 1000, 65536, 65537};
  for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); ++s) {
    const int num = sizes[s];
    const int dim = 2;
    for (int variant = 0; variant < 6; ++variant) {
      const int levels = 2 + variant;
      const bool legacy = variant % 2;
      const int mining_ratio = 1 + variant;
      vector<Dtype> a(num * dim), b(num * dim), sim(num), diff(num * dim), dist_sq(num), cost(num);
      for (int i = 0; i < num * dim; ++i) {
        a[i] = Dtype(0.375) * (caffe_rng_rand() % levels);
        b[i] = Dtype(0.375) * (caffe_rng_rand() % levels);
      }
      // Mixed labels, or a rare kind, or a single kind.
      for (int i = 0; i < num; ++i) {
        sim[i] = variant < 3 ? Dtype(caffe_rng_rand() % 2) : Dtype(variant == 5 || i % 17 == 3);
      }
      const int num_picked = caffe_mining::num_picked_pairs(num, mining_ratio);
      vector<int> cpu_picked(num);
      caffe_mining::ContrastiveOptions options;
      options.legacy_version = legacy;
      options.mining_ratio = mining_ratio;
      vector<char> workspace(caffe_mining::contrastive_workspace_bytes(num, options,
          caffe_mining::Device::kCpu) + 8);
      const caffe_mining::ContrastivePairs<Dtype> pairs = {&diff[0], &dist_sq[0], &cost[0],
          &cpu_picked[0]};
      Dtype loss;
      caffe_mining::contrastive_forward_cpu(num, dim, &a[0], &b[0], &sim[0], options, pairs,
          static_cast<void*>(&workspace[0]), &loss);
      const vector<int> radix_picked = this->RadixPicked(sim, cost, num_picked);
      EXPECT_TRUE(cpu_picked == radix_picked) << "N = " << num << ", variant " << variant;
      int count = 0;
      for (int i = 0; i < num; ++i) count += radix_picked[i];
      EXPECT_EQ(num_picked, count);
    }
  }
}

// Keys order costs like the costs themselves; -0 and +0 are equal; NaN counts as the hardest.
TYPED_TEST(MiningContrastiveRadixSelectTest, TestHardnessKey) {
  typedef TypeParam Dtype;
  using caffe_mining::hardness_key;
  EXPECT_LT(hardness_key(Dtype(0.25)), hardness_key(Dtype(0.5)));
  EXPECT_LT(hardness_key(Dtype(0)), hardness_key(Dtype(1e-30)));
  EXPECT_EQ(hardness_key(Dtype(0)), hardness_key(-Dtype(0)));
  EXPECT_EQ(hardness_key(std::numeric_limits<Dtype>::infinity()),
            hardness_key(std::numeric_limits<Dtype>::quiet_NaN()));
  EXPECT_LT(hardness_key(std::numeric_limits<Dtype>::max()),
            hardness_key(std::numeric_limits<Dtype>::quiet_NaN()));
}

}  // namespace caffe
