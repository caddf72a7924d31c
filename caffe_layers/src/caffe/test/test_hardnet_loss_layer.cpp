#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/layers/hardnet_loss_layer.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

namespace hardnet_test {

// One candidate negative of a row, as the layer's header defines it.
struct Candidate {
  double value;
  int index;
  bool swapped;
};

// l(pos, neg), written from the header's formulas (SOFTMAX in the reference
// code's own form, not the layer's softplus form).
double RowLoss(HardNetLossParameter::LossType type, double margin, double pos,
               double neg) {
  switch (type) {
    case HardNetLossParameter::SOFTMAX:
      return -std::log(std::exp(2.0 - pos) /
                       (std::exp(2.0 - pos) + std::exp(2.0 - neg)));
    case HardNetLossParameter::CONTRASTIVE:
      return std::max(margin - neg, 0.0) + pos;
    default:
      return std::max(margin + pos - neg, 0.0);
  }
}

// A hand-made distance v as the layer computes it, with the default eps.
double HandDist(double v) { return std::sqrt(v * v + 1e-6); }

// The header's RANDOM draws: u = (x >> 8) / 2^24, x from std::mt19937(seed).
std::vector<double> Uniforms(std::mt19937* engine, int num) {
  std::vector<double> u(num);
  for (int i = 0; i < num; ++i) u[i] = ((*engine)() >> 8) / 16777216.0;
  return u;
}

// Loss of hand-listed candidates: cands[i] = row i's valid candidates in
// increasing j (empty = no valid negative).
double LossFromCandidates(const HardNetLossParameter& param,
    const std::vector<double>& pos,
    const std::vector<std::vector<Candidate> >& cands,
    const std::vector<double>& uniforms, std::vector<Candidate>* chosen) {
  double sum = 0;
  int rows = 0;
  chosen->assign(pos.size(), Candidate{0, -1, false});
  for (size_t i = 0; i < pos.size(); ++i) {
    const std::vector<Candidate>& row = cands[i];
    if (row.empty()) continue;
    ++rows;
    size_t hardest = 0;
    for (size_t k = 1; k < row.size(); ++k) {
      if (row[k].value < row[hardest].value) hardest = k;  // first on ties
    }
    switch (param.batch_reduce()) {
      case HardNetLossParameter::AVERAGE: {
        double row_sum = 0;
        for (size_t k = 0; k < row.size(); ++k) {
          row_sum += RowLoss(param.loss_type(), param.margin(), pos[i],
                             row[k].value);
        }
        sum += row_sum / row.size();
        (*chosen)[i] = row[hardest];
        break;
      }
      case HardNetLossParameter::RANDOM: {
        const size_t rank = static_cast<size_t>(
            std::floor(uniforms[i] * row.size()));
        sum += RowLoss(param.loss_type(), param.margin(), pos[i],
                       row[rank].value);
        (*chosen)[i] = row[rank];
        break;
      }
      default:
        sum += RowLoss(param.loss_type(), param.margin(), pos[i],
                       row[hardest].value);
        (*chosen)[i] = row[hardest];
    }
  }
  return rows > 0 ? sum / rows : 0.0;
}

// Slow, obviously-correct mining with loops and direct distances, in double.
void LoopCandidates(int num, int dim, const std::vector<double>& a,
    const std::vector<double>& p, const std::vector<double>* labels,
    const HardNetLossParameter& param, std::vector<double>* pos,
    std::vector<std::vector<Candidate> >* cands) {
  std::vector<double> dist(num * num);
  for (int i = 0; i < num; ++i) {
    for (int j = 0; j < num; ++j) {
      double sq = 0;
      for (int k = 0; k < dim; ++k) {
        const double d = a[i * dim + k] - p[j * dim + k];
        sq += d * d;
      }
      dist[i * num + j] = std::sqrt(sq + param.eps());
    }
  }
  pos->assign(num, 0);
  cands->assign(num, std::vector<Candidate>());
  for (int i = 0; i < num; ++i) {
    (*pos)[i] = dist[i * num + i];
    for (int j = 0; j < num; ++j) {
      if (j == i || (labels && (*labels)[i] == (*labels)[j])) continue;
      const double d_ij = dist[i * num + j], d_ji = dist[j * num + i];
      const bool ij_ok = d_ij >= param.duplicate_threshold();
      const bool ji_ok = param.anchor_swap() &&
          d_ji >= param.duplicate_threshold();
      if (ij_ok && (!ji_ok || d_ij <= d_ji)) {
        (*cands)[i].push_back(Candidate{d_ij, j, false});
      } else if (ji_ok) {
        (*cands)[i].push_back(Candidate{d_ji, j, true});
      }
    }
  }
}

// Re-seeds its RANDOM engine before every forward pass, so that the finite
// differences of GradientChecker see the same picks as the analytic pass.
template <typename Dtype>
class FixedDrawHardNetLossLayer : public HardNetLossLayer<Dtype> {
 public:
  explicit FixedDrawHardNetLossLayer(const LayerParameter& param)
      : HardNetLossLayer<Dtype>(param) {}

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top) {
    this->random_engine_.seed(4242);
    HardNetLossLayer<Dtype>::Forward_cpu(bottom, top);
  }
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top) {
    this->random_engine_.seed(4242);
    HardNetLossLayer<Dtype>::Forward_gpu(bottom, top);
  }
};

const HardNetLossParameter::LossType kLossTypes[] = {
    HardNetLossParameter::TRIPLET_MARGIN, HardNetLossParameter::SOFTMAX,
    HardNetLossParameter::CONTRASTIVE};
const HardNetLossParameter::BatchReduce kReduces[] = {
    HardNetLossParameter::MIN, HardNetLossParameter::AVERAGE,
    HardNetLossParameter::RANDOM};

}  // namespace hardnet_test

using hardnet_test::Candidate;

template <typename TypeParam>
class HardNetLossLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  HardNetLossLayerTest()
      : anchor_(new Blob<Dtype>()), positive_(new Blob<Dtype>()),
        label_(new Blob<Dtype>()), loss_(new Blob<Dtype>()),
        choice_(new Blob<Dtype>()) {
    bottom_.push_back(anchor_);
    bottom_.push_back(positive_);
    top_.push_back(loss_);
  }
  virtual ~HardNetLossLayerTest() {
    delete anchor_;
    delete positive_;
    delete label_;
    delete loss_;
    delete choice_;
  }

  // Float sums in a different order than the double loops.
  double Tolerance() const { return sizeof(Dtype) == 4 ? 2e-5 : 1e-10; }

  void Fill(int num, int dim, const std::vector<double>& a,
            const std::vector<double>& p) {
    anchor_->Reshape(vector<int>{num, dim});
    positive_->Reshape(vector<int>{num, dim});
    for (int k = 0; k < num * dim; ++k) {
      anchor_->mutable_cpu_data()[k] = Dtype(a[k]);
      positive_->mutable_cpu_data()[k] = Dtype(p[k]);
    }
  }
  void UseLabels(const std::vector<double>& labels) {
    label_->Reshape(vector<int>{static_cast<int>(labels.size())});
    for (size_t k = 0; k < labels.size(); ++k) {
      label_->mutable_cpu_data()[k] = Dtype(labels[k]);
    }
    if (bottom_.size() == 2) bottom_.push_back(label_);
  }
  void UseChoiceTop() {
    if (top_.size() == 1) top_.push_back(choice_);
  }

  // The hand-made batch: 1-D points lifted to (x, 1), so d_ij = |x_i - y_j|
  // (with eps) but the GEMM sees non-zero norms.
  //   anchors x = 0, 3, 7; positives y = 1, 5, 6:
  //   d = [[1, 5, 6], [2, 2, 3], [6, 2, 1]], pos = (1, 2, 1).
  void FillHandBatch(const std::vector<double>& x,
                     const std::vector<double>& y) {
    std::vector<double> a, p;
    for (size_t i = 0; i < x.size(); ++i) {
      a.push_back(x[i]);
      a.push_back(1.0);
      p.push_back(y[i]);
      p.push_back(1.0);
    }
    Fill(static_cast<int>(x.size()), 2, a, p);
  }

  // Forward, then compare the loss and top[1] with the expected values.
  void ExpectForward(Layer<Dtype>* layer, double loss,
                     const std::vector<Candidate>& chosen) {
    layer->Forward(bottom_, top_);
    EXPECT_NEAR(loss_->cpu_data()[0], loss, Tolerance() * (1 + loss));
    ASSERT_EQ(choice_->count(), 2 * static_cast<int>(chosen.size()));
    for (size_t i = 0; i < chosen.size(); ++i) {
      EXPECT_EQ(choice_->cpu_data()[2 * i], chosen[i].index) << "row " << i;
      if (chosen[i].index >= 0) {
        EXPECT_EQ(choice_->cpu_data()[2 * i + 1], chosen[i].swapped ? 1 : 0)
            << "row " << i;
      }
    }
  }

  // Compares the layer with the loop reference on the current bottoms.
  void ExpectMatchesLoopReference(const LayerParameter& layer_param,
                                  int forwards) {
    HardNetLossLayer<Dtype> layer(layer_param);
    UseChoiceTop();
    layer.SetUp(bottom_, top_);
    const HardNetLossParameter& param = layer_param.hardnet_loss_param();
    std::mt19937 engine(param.seed());
    for (int f = 0; f < forwards; ++f) {
      const int num = anchor_->shape(0), dim = anchor_->shape(1);
      std::vector<double> a(anchor_->cpu_data(),
                            anchor_->cpu_data() + num * dim);
      std::vector<double> p(positive_->cpu_data(),
                            positive_->cpu_data() + num * dim);
      std::vector<double> labels;
      if (bottom_.size() > 2) {
        labels.assign(label_->cpu_data(), label_->cpu_data() + num);
      }
      std::vector<double> pos;
      std::vector<std::vector<Candidate> > cands;
      hardnet_test::LoopCandidates(num, dim, a, p,
          bottom_.size() > 2 ? &labels : NULL, param, &pos, &cands);
      std::vector<double> u;
      if (param.batch_reduce() == HardNetLossParameter::RANDOM) {
        u = hardnet_test::Uniforms(&engine, num);
      }
      std::vector<Candidate> chosen;
      const double loss = hardnet_test::LossFromCandidates(param, pos, cands,
                                                          u, &chosen);
      layer.Reshape(bottom_, top_);
      ExpectForward(&layer, loss, chosen);
    }
  }

  // Random descriptors in [-1, 1] whose mining and hinges stay put under
  // perturbations of +-stepsize: no tie between the hardest two candidates
  // of a row, nor between d_ij and d_ji (with anchor_swap), no hinge of the
  // loss type within `gap` of its kink, no distance near the duplicate
  // threshold. Then finite differences see one smooth piece of the loss.
  void FillAwayFromKinks(int num, int dim, const LayerParameter& layer_param,
                         const std::vector<double>* labels) {
    const HardNetLossParameter& param = layer_param.hardnet_loss_param();
    const double gap = 0.05;  // five float steps
    std::mt19937 engine(1234);
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    for (int attempt = 0; attempt < 100000; ++attempt) {
      std::vector<double> a(num * dim), p(num * dim);
      for (size_t k = 0; k < a.size(); ++k) a[k] = uniform(engine);
      for (size_t k = 0; k < p.size(); ++k) p[k] = uniform(engine);
      std::vector<double> pos;
      std::vector<std::vector<Candidate> > cands;
      hardnet_test::LoopCandidates(num, dim, a, p, labels, param, &pos,
                                   &cands);
      bool smooth = true;
      for (int i = 0; i < num && smooth; ++i) {
        std::vector<double> values;
        for (size_t k = 0; k < cands[i].size(); ++k) {
          const double neg = cands[i][k].value;
          values.push_back(neg);
          smooth = smooth && neg > param.duplicate_threshold() + gap;
          if (param.loss_type() == HardNetLossParameter::TRIPLET_MARGIN) {
            smooth = smooth && std::fabs(param.margin() + pos[i] - neg) > gap;
          }
          if (param.loss_type() == HardNetLossParameter::CONTRASTIVE) {
            smooth = smooth && std::fabs(param.margin() - neg) > gap;
          }
          if (param.anchor_swap()) {  // d_ij and d_ji apart
            const int j = cands[i][k].index;
            double sq_ij = 0, sq_ji = 0;
            for (int c = 0; c < dim; ++c) {
              sq_ij += std::pow(a[i * dim + c] - p[j * dim + c], 2);
              sq_ji += std::pow(a[j * dim + c] - p[i * dim + c], 2);
            }
            smooth = smooth &&
                std::fabs(std::sqrt(sq_ij) - std::sqrt(sq_ji)) > gap;
          }
        }
        std::sort(values.begin(), values.end());
        if (values.size() > 1) smooth = smooth && values[1] - values[0] > gap;
      }
      if (smooth) {
        Fill(num, dim, a, p);
        return;
      }
    }
    FAIL() << "no kink-free batch found";
  }
  // GradientChecker settings, see TestGradient.
  Dtype StepSize() const { return sizeof(Dtype) == 4 ? 1e-2 : 1e-4; }
  Dtype Threshold() const { return sizeof(Dtype) == 4 ? 1e-3 : 1e-6; }

  Blob<Dtype>* const anchor_;
  Blob<Dtype>* const positive_;
  Blob<Dtype>* const label_;
  Blob<Dtype>* const loss_;
  Blob<Dtype>* const choice_;
  vector<Blob<Dtype>*> bottom_;
  vector<Blob<Dtype>*> top_;
};

TYPED_TEST_CASE(HardNetLossLayerTest, TestDtypesAndDevices);

TYPED_TEST(HardNetLossLayerTest, TestDefaultsFollowReferenceCode) {
  const HardNetLossParameter param;
  EXPECT_EQ(param.margin(), 1.0f);
  EXPECT_FALSE(param.anchor_swap());
  EXPECT_EQ(param.batch_reduce(), HardNetLossParameter::MIN);
  EXPECT_EQ(param.loss_type(), HardNetLossParameter::TRIPLET_MARGIN);
  EXPECT_EQ(param.eps(), 1e-6f);
  EXPECT_EQ(param.duplicate_threshold(), 0.008f);
  EXPECT_FALSE(param.has_seed());
}

// Every loss_type x batch_reduce x anchor_swap on the hand-made batch, with
// the candidates listed by hand from d = [[1, 5, 6], [2, 2, 3], [6, 2, 1]].
TYPED_TEST(HardNetLossLayerTest, TestForwardHandComputed) {
  typedef typename TypeParam::Dtype Dtype;
  this->FillHandBatch({0, 3, 7}, {1, 5, 6});
  this->UseChoiceTop();
  auto d = &hardnet_test::HandDist;
  const std::vector<double> pos = {d(1), d(2), d(1)};
  // Without anchor_swap candidate j of row i is d_ij.
  const std::vector<std::vector<Candidate> > plain = {
      {{d(5), 1, false}, {d(6), 2, false}},
      {{d(2), 0, false}, {d(3), 2, false}},
      {{d(6), 0, false}, {d(2), 1, false}}};
  // With it, min(d_ij, d_ji): row 0 j=1 takes d_10 = 2, j=2 keeps d_02 at the
  // tie d_02 = d_20 = 6; row 1 j=2 takes d_21 = 2 (ties j=0's d_10 = 2: the
  // lower j wins); row 2 keeps its own values (d_12 = 3 > d_21 = 2).
  const std::vector<std::vector<Candidate> > swapped = {
      {{d(2), 1, true}, {d(6), 2, false}},
      {{d(2), 0, false}, {d(2), 2, true}},
      {{d(6), 0, false}, {d(2), 1, false}}};
  int combos = 0;
  for (auto type : hardnet_test::kLossTypes) {
    for (auto reduce : hardnet_test::kReduces) {
      for (bool swap : {false, true}) {
        LayerParameter layer_param;
        HardNetLossParameter* param = layer_param.mutable_hardnet_loss_param();
        param->set_margin(2.5);  // some hinges active, some not
        param->set_loss_type(type);
        param->set_batch_reduce(reduce);
        param->set_anchor_swap(swap);
        param->set_seed(1701);
        HardNetLossLayer<Dtype> layer(layer_param);
        layer.SetUp(this->bottom_, this->top_);
        std::mt19937 engine(1701);
        for (int forward = 0; forward < 3; ++forward) {  // fresh draws each
          std::vector<double> u;
          if (reduce == HardNetLossParameter::RANDOM) {
            u = hardnet_test::Uniforms(&engine, 3);
          }
          std::vector<Candidate> chosen;
          const double loss = hardnet_test::LossFromCandidates(
              *param, pos, swap ? swapped : plain, u, &chosen);
          SCOPED_TRACE(::testing::Message() << "type " << type << " reduce "
              << reduce << " swap " << swap << " forward " << forward);
          this->ExpectForward(&layer, loss, chosen);
        }
        ++combos;
      }
    }
  }
  EXPECT_EQ(combos, 18);
}

// Spot values written out completely, so the formulas above are checked too.
TYPED_TEST(HardNetLossLayerTest, TestForwardSpotValues) {
  typedef typename TypeParam::Dtype Dtype;
  this->FillHandBatch({0, 3, 7}, {1, 5, 6});
  LayerParameter layer_param;
  HardNetLossParameter* param = layer_param.mutable_hardnet_loss_param();
  param->set_margin(2.5);
  {
    // MIN, no swap: negatives 5, 2, 2 -> hinges 0, 2.5, 1.5.
    HardNetLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    layer.Forward(this->bottom_, this->top_);
    EXPECT_NEAR(this->loss_->cpu_data()[0], 4.0 / 3.0, 1e-5);
  }
  {
    // CONTRASTIVE, MIN, swap: negatives 2, 2, 2 -> (0.5 + 1, 0.5 + 2, 0.5 + 1).
    param->set_loss_type(HardNetLossParameter::CONTRASTIVE);
    param->set_anchor_swap(true);
    HardNetLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    layer.Forward(this->bottom_, this->top_);
    EXPECT_NEAR(this->loss_->cpu_data()[0], 5.5 / 3.0, 1e-5);
  }
  {
    // SOFTMAX, AVERAGE, no swap: row 0 averages log(1 + e^(1-5)) and
    // log(1 + e^(1-6)), ...
    param->set_loss_type(HardNetLossParameter::SOFTMAX);
    param->set_anchor_swap(false);
    param->set_batch_reduce(HardNetLossParameter::AVERAGE);
    HardNetLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    layer.Forward(this->bottom_, this->top_);
    auto sp = [](double x) { return std::log1p(std::exp(x)); };
    const double expected = ((sp(-4) + sp(-5)) / 2 + (sp(0) + sp(-1)) / 2 +
                             (sp(-5) + sp(-1)) / 2) / 3;
    EXPECT_NEAR(this->loss_->cpu_data()[0], expected, 1e-5);
  }
}

// Labels: pairs 0 and 1 share a class, so they are never negatives of each
// other.
TYPED_TEST(HardNetLossLayerTest, TestLabelMasking) {
  typedef typename TypeParam::Dtype Dtype;
  this->FillHandBatch({0, 3, 7}, {1, 5, 6});
  this->UseLabels({4, 4, 9});
  this->UseChoiceTop();
  auto d = &hardnet_test::HandDist;
  const std::vector<double> pos = {d(1), d(2), d(1)};
  LayerParameter layer_param;
  HardNetLossParameter* param = layer_param.mutable_hardnet_loss_param();
  param->set_margin(2.5);
  std::vector<Candidate> chosen;
  {
    // Row 0: only j=2 (6); row 1: only j=2 (3); row 2: j=0 (6), j=1 (2).
    HardNetLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    const double loss = hardnet_test::LossFromCandidates(*param, pos,
        {{{d(6), 2, false}}, {{d(3), 2, false}},
         {{d(6), 0, false}, {d(2), 1, false}}}, {}, &chosen);
    EXPECT_NEAR(loss, (0 + 1.5 + 1.5) / 3.0, 1e-5);
    this->ExpectForward(&layer, loss, chosen);
  }
  {
    // With the swap row 1's j=2 becomes d_21 = 2.
    param->set_anchor_swap(true);
    HardNetLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    const double loss = hardnet_test::LossFromCandidates(*param, pos,
        {{{d(6), 2, false}}, {{d(2), 2, true}},
         {{d(6), 0, false}, {d(2), 1, false}}}, {}, &chosen);
    EXPECT_NEAR(loss, (0 + 2.5 + 1.5) / 3.0, 1e-5);
    this->ExpectForward(&layer, loss, chosen);
  }
}

// Positive 2 duplicates anchor 0 (d_02 = sqrt(eps) < 0.008): never row 0's
// negative, unless duplicate_threshold = 0.
TYPED_TEST(HardNetLossLayerTest, TestDuplicatesAreNotNegatives) {
  typedef typename TypeParam::Dtype Dtype;
  // d = [[1, 5, 0], [2, 2, 3], [6, 2, 7]]
  this->FillHandBatch({0, 3, 7}, {1, 5, 0});
  this->UseChoiceTop();
  auto d = &hardnet_test::HandDist;
  const std::vector<double> pos = {d(1), d(2), d(7)};
  LayerParameter layer_param;
  HardNetLossParameter* param = layer_param.mutable_hardnet_loss_param();
  param->set_margin(2.5);
  std::vector<Candidate> chosen;
  {
    HardNetLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    const double loss = hardnet_test::LossFromCandidates(*param, pos,
        {{{d(5), 1, false}},
         {{d(2), 0, false}, {d(3), 2, false}},
         {{d(6), 0, false}, {d(2), 1, false}}}, {}, &chosen);
    EXPECT_NEAR(loss, (0 + 2.5 + 7.5) / 3.0, 1e-5);
    this->ExpectForward(&layer, loss, chosen);
  }
  {
    param->set_duplicate_threshold(0);
    HardNetLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    const double loss = hardnet_test::LossFromCandidates(*param, pos,
        {{{d(5), 1, false}, {d(0), 2, false}},
         {{d(2), 0, false}, {d(3), 2, false}},
         {{d(6), 0, false}, {d(2), 1, false}}}, {}, &chosen);
    EXPECT_EQ(chosen[0].index, 2);
    this->ExpectForward(&layer, loss, chosen);
  }
}

// Row 3's only other-class pairs (with rows 0 and 1) are duplicates both
// ways, so it has no valid negative even with anchor_swap: it is left out of
// the mean and neither of its descriptors gets a gradient.
TYPED_TEST(HardNetLossLayerTest, TestRowWithoutNegative) {
  typedef typename TypeParam::Dtype Dtype;
  // x = 0, 0, 2, 5; y = 5, 5, 9, 0; labels 1, 1, 2, 2:
  // d = [[5, 5, 9, 0], [5, 5, 9, 0], [3, 3, 7, 2], [0, 0, 4, 5]].
  // Row 3 may only use j = 0, 1, and d_30, d_31, d_03, d_13 are all 0.
  this->FillHandBatch({0, 0, 2, 5}, {5, 5, 9, 0});
  this->UseLabels({1, 1, 2, 2});
  this->UseChoiceTop();
  auto d = &hardnet_test::HandDist;
  const std::vector<double> pos = {d(5), d(5), d(7), d(5)};
  for (auto reduce : hardnet_test::kReduces) {
    for (bool swap : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "reduce " << reduce << " swap "
                   << swap);
      LayerParameter layer_param;
      HardNetLossParameter* param = layer_param.mutable_hardnet_loss_param();
      param->set_margin(2.5);
      param->set_batch_reduce(reduce);
      param->set_anchor_swap(swap);
      HardNetLossLayer<Dtype> layer(layer_param);
      layer.SetUp(this->bottom_, this->top_);
      // Rows 0 and 1: j=2 (9, or the swapped d_20 = d_21 = 3); row 2: j=0 and
      // j=1, both 3 (d_02 = d_12 = 9 are larger); row 3: none. Both of row
      // 2's candidates have the same value, so every reduce gives one loss.
      std::vector<Candidate> chosen;
      const double loss = hardnet_test::LossFromCandidates(*param, pos,
          {{{swap ? d(3) : d(9), 2, swap}}, {{swap ? d(3) : d(9), 2, swap}},
           {{d(3), 0, false}, {d(3), 1, false}}, {}},
          std::vector<double>(4, 0.0), &chosen);
      EXPECT_NEAR(loss, swap ? (4.5 + 4.5 + 6.5) / 3 : 6.5 / 3, 1e-5);
      layer.Forward(this->bottom_, this->top_);
      EXPECT_NEAR(this->loss_->cpu_data()[0], loss,
                  this->Tolerance() * (1 + loss));
      EXPECT_EQ(this->choice_->cpu_data()[6], -1);
      EXPECT_EQ(this->choice_->cpu_data()[0], 2);
      this->loss_->mutable_cpu_diff()[0] = Dtype(1);
      layer.Backward(this->top_, vector<bool>{true, true, false},
                     this->bottom_);
      for (int k = 6; k < 8; ++k) {
        EXPECT_EQ(this->anchor_->cpu_diff()[k], Dtype(0));
        EXPECT_EQ(this->positive_->cpu_diff()[k], Dtype(0));
      }
      // p_2 (y = 9) only enters row 2's positive distance (rows 0 and 1
      // use it with an inactive hinge, or not at all with the swap):
      // dE/dy_2 = (1 / R) * d|2 - y|/dy = 1/3.
      EXPECT_NEAR(this->positive_->cpu_diff()[4], 1.0 / 3.0, 1e-5);
    }
  }
}

TYPED_TEST(HardNetLossLayerTest, TestNoValidNegativeAnywhere) {
  typedef typename TypeParam::Dtype Dtype;
  this->FillHandBatch({0, 3, 7}, {1, 5, 6});
  this->UseLabels({3, 3, 3});
  this->UseChoiceTop();
  for (auto type : hardnet_test::kLossTypes) {
    for (auto reduce : hardnet_test::kReduces) {
      LayerParameter layer_param;
      layer_param.mutable_hardnet_loss_param()->set_loss_type(type);
      layer_param.mutable_hardnet_loss_param()->set_batch_reduce(reduce);
      layer_param.mutable_hardnet_loss_param()->set_anchor_swap(true);
      HardNetLossLayer<Dtype> layer(layer_param);
      layer.SetUp(this->bottom_, this->top_);
      this->ExpectForward(&layer, 0.0, {{0, -1, false}, {0, -1, false},
                                        {0, -1, false}});
      this->loss_->mutable_cpu_diff()[0] = Dtype(1);
      layer.Backward(this->top_, vector<bool>{true, true, false},
                     this->bottom_);
      for (int k = 0; k < this->anchor_->count(); ++k) {
        EXPECT_EQ(this->anchor_->cpu_diff()[k], Dtype(0));
        EXPECT_EQ(this->positive_->cpu_diff()[k], Dtype(0));
      }
    }
  }
}

// A NaN or infinite feature, or features whose squared distances overflow: NaN loss and gradients, every row
// reported without a negative, in every mode (never a finite loss with the row left out).
TYPED_TEST(HardNetLossLayerTest, TestNonFiniteInputGivesNaN) {
  typedef typename TypeParam::Dtype Dtype;
  this->UseChoiceTop();
  const double huge = sizeof(Dtype) == 4 ? 1e30 : 1e200;
  const std::vector<std::vector<double> > anchors = {
      {0, NAN, 3, 0, 7, 1}, {0, 1, INFINITY, 0, 7, 1}, {0, huge, 3, 0, 7, huge}};
  for (const std::vector<double>& anchor : anchors) {
    this->Fill(3, 2, anchor, {1, 0, 5, 1, 6, 0});
    for (auto reduce : hardnet_test::kReduces) {
      for (bool swap : {false, true}) {
        LayerParameter layer_param;
        layer_param.mutable_hardnet_loss_param()->set_batch_reduce(reduce);
        layer_param.mutable_hardnet_loss_param()->set_anchor_swap(swap);
        HardNetLossLayer<Dtype> layer(layer_param);
        layer.SetUp(this->bottom_, this->top_);
        layer.Forward(this->bottom_, this->top_);
        EXPECT_TRUE(std::isnan(this->loss_->cpu_data()[0]));
        for (int i = 0; i < 3; ++i) EXPECT_EQ(this->choice_->cpu_data()[2 * i], Dtype(-1));
        this->loss_->mutable_cpu_diff()[0] = Dtype(1);
        layer.Backward(this->top_, vector<bool>{true, true}, this->bottom_);
        for (int k = 0; k < this->anchor_->count(); ++k) {
          EXPECT_TRUE(std::isnan(this->anchor_->cpu_diff()[k])) << k;
          EXPECT_TRUE(std::isnan(this->positive_->cpu_diff()[k])) << k;
        }
      }
    }
  }
}

// Identical and all-zero descriptors: finite loss and gradients, never NaN.
TYPED_TEST(HardNetLossLayerTest, TestIdenticalAndZeroDescriptorsAreFinite) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(4, 3, std::vector<double>(12, 0.0), std::vector<double>(12, 0.0));
  for (double threshold : {0.008, 0.0}) {
    for (auto type : hardnet_test::kLossTypes) {
      for (auto reduce : hardnet_test::kReduces) {
        for (bool swap : {false, true}) {
          LayerParameter layer_param;
          HardNetLossParameter* param =
              layer_param.mutable_hardnet_loss_param();
          param->set_loss_type(type);
          param->set_batch_reduce(reduce);
          param->set_anchor_swap(swap);
          param->set_duplicate_threshold(threshold);
          HardNetLossLayer<Dtype> layer(layer_param);
          layer.SetUp(this->bottom_, this->top_);
          layer.Forward(this->bottom_, this->top_);
          const double loss = this->loss_->cpu_data()[0];
          // All distances are sqrt(eps): duplicates (loss 0) by default,
          // otherwise l(sqrt(eps), sqrt(eps)).
          const double expected = threshold > 0 ? 0.0 :
              hardnet_test::RowLoss(type, 1.0, 1e-3, 1e-3);
          EXPECT_NEAR(loss, expected, 1e-5);
          this->loss_->mutable_cpu_diff()[0] = Dtype(1);
          layer.Backward(this->top_, vector<bool>{true, true}, this->bottom_);
          for (int k = 0; k < this->anchor_->count(); ++k) {
            EXPECT_TRUE(std::isfinite(this->anchor_->cpu_diff()[k]));
            EXPECT_TRUE(std::isfinite(this->positive_->cpu_diff()[k]));
          }
        }
      }
    }
  }
}

// Random batches with labels against the loop reference, every combination.
TYPED_TEST(HardNetLossLayerTest, TestForwardMatchesLoopReference) {
  std::mt19937 engine(77);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<double> a(6 * 4), p(6 * 4);
  for (size_t k = 0; k < a.size(); ++k) a[k] = uniform(engine);
  for (size_t k = 0; k < p.size(); ++k) p[k] = uniform(engine);
  this->Fill(6, 4, a, p);
  this->UseLabels({0, 1, 0, 2, 1, 0});
  for (auto type : hardnet_test::kLossTypes) {
    for (auto reduce : hardnet_test::kReduces) {
      for (bool swap : {false, true}) {
        LayerParameter layer_param;
        HardNetLossParameter* param = layer_param.mutable_hardnet_loss_param();
        param->set_margin(1.3);
        param->set_loss_type(type);
        param->set_batch_reduce(reduce);
        param->set_anchor_swap(swap);
        param->set_seed(99);
        SCOPED_TRACE(::testing::Message() << "type " << type << " reduce "
                     << reduce << " swap " << swap);
        this->ExpectMatchesLoopReference(layer_param, 4);
      }
    }
  }
}

// Over many draws RANDOM picks every valid negative and nothing else.
TYPED_TEST(HardNetLossLayerTest, TestRandomCoversValidNegatives) {
  typedef typename TypeParam::Dtype Dtype;
  std::mt19937 engine(5);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  const int num = 5;
  std::vector<double> a(num * 3), p(num * 3);
  for (size_t k = 0; k < a.size(); ++k) a[k] = uniform(engine);
  for (size_t k = 0; k < p.size(); ++k) p[k] = uniform(engine);
  this->Fill(num, 3, a, p);
  const std::vector<double> labels = {0, 1, 1, 2, 0};
  this->UseLabels(labels);
  this->UseChoiceTop();
  LayerParameter layer_param;
  layer_param.mutable_hardnet_loss_param()->set_batch_reduce(
      HardNetLossParameter::RANDOM);
  HardNetLossLayer<Dtype> layer(layer_param);  // seeded from Caffe's RNG
  layer.SetUp(this->bottom_, this->top_);
  std::vector<int> picks(num * num, 0);
  for (int forward = 0; forward < 200; ++forward) {
    layer.Forward(this->bottom_, this->top_);
    for (int i = 0; i < num; ++i) {
      const int j = static_cast<int>(this->choice_->cpu_data()[2 * i]);
      ASSERT_GE(j, 0);
      ASSERT_LT(j, num);
      ++picks[i * num + j];
    }
  }
  for (int i = 0; i < num; ++i) {
    for (int j = 0; j < num; ++j) {
      if (i == j || labels[i] == labels[j]) {
        EXPECT_EQ(picks[i * num + j], 0) << i << ", " << j;
      } else {
        EXPECT_GT(picks[i * num + j], 10) << i << ", " << j;
      }
    }
  }
}

TYPED_TEST(HardNetLossLayerTest, TestChangingBatchSize) {
  typedef typename TypeParam::Dtype Dtype;
  LayerParameter layer_param;
  HardNetLossParameter* param = layer_param.mutable_hardnet_loss_param();
  param->set_batch_reduce(HardNetLossParameter::AVERAGE);
  param->set_anchor_swap(true);
  param->set_margin(0.6);
  HardNetLossLayer<Dtype> layer(layer_param);
  bool set_up = false;
  for (int num : {3, 6, 2, 5}) {
    this->FillAwayFromKinks(num, 4, layer_param, NULL);
    if (!set_up) {
      layer.SetUp(this->bottom_, this->top_);
      set_up = true;
    }
    layer.Reshape(this->bottom_, this->top_);
    EXPECT_EQ(this->loss_->num_axes(), 0);
    std::vector<double> a(this->anchor_->cpu_data(),
                          this->anchor_->cpu_data() + num * 4);
    std::vector<double> p(this->positive_->cpu_data(),
                          this->positive_->cpu_data() + num * 4);
    std::vector<double> pos;
    std::vector<std::vector<Candidate> > cands;
    hardnet_test::LoopCandidates(num, 4, a, p, NULL, *param, &pos, &cands);
    std::vector<Candidate> chosen;
    const double loss = hardnet_test::LossFromCandidates(
        *param, pos, cands, std::vector<double>(), &chosen);
    layer.Forward(this->bottom_, this->top_);
    EXPECT_NEAR(this->loss_->cpu_data()[0], loss,
                this->Tolerance() * (1 + loss)) << "N = " << num;
    // And the gradient at the new size.
    GradientChecker<Dtype> checker(this->StepSize(), this->Threshold(), 1701);
    checker.CheckGradientExhaustive(&layer, this->bottom_, this->top_, 0);
    checker.CheckGradientExhaustive(&layer, this->bottom_, this->top_, 1);
  }
}

// Exact gradients, all combinations, with and without labels. Thresholds:
// the loss is smooth away from its kinks (FillAwayFromKinks keeps every kink
// 5 steps away), so central differences are accurate to O(stepsize^2): float
// 1e-2 / 1e-3 (float rounding of the loss over 2e-2 is ~1e-5), double
// 1e-4 / 1e-6.
TYPED_TEST(HardNetLossLayerTest, TestGradient) {
  typedef typename TypeParam::Dtype Dtype;
  const std::vector<double> labels = {0, 1, 0, 2, 1};
  for (bool use_labels : {false, true}) {
    for (auto type : hardnet_test::kLossTypes) {
      for (auto reduce : hardnet_test::kReduces) {
        for (bool swap : {false, true}) {
          LayerParameter layer_param;
          HardNetLossParameter* param =
              layer_param.mutable_hardnet_loss_param();
          param->set_margin(0.6);  // about half of the hinges active
          param->set_loss_type(type);
          param->set_batch_reduce(reduce);
          param->set_anchor_swap(swap);
          SCOPED_TRACE(::testing::Message() << "type " << type << " reduce "
              << reduce << " swap " << swap << " labels " << use_labels);
          if (use_labels) this->UseLabels(labels);
          this->FillAwayFromKinks(5, 3, layer_param,
                                  use_labels ? &labels : NULL);
          hardnet_test::FixedDrawHardNetLossLayer<Dtype> layer(layer_param);
          layer.SetUp(this->bottom_, this->top_);
          GradientChecker<Dtype> checker(this->StepSize(), this->Threshold(),
                                         1701);
          checker.CheckGradientExhaustive(&layer, this->bottom_, this->top_,
                                          0);
          checker.CheckGradientExhaustive(&layer, this->bottom_, this->top_,
                                          1);
        }
      }
    }
  }
}

// The top's diff (loss_weight) scales both bottoms' diffs.
TYPED_TEST(HardNetLossLayerTest, TestLossWeightScalesGradient) {
  typedef typename TypeParam::Dtype Dtype;
  this->FillHandBatch({0, 3, 7}, {1, 5, 6});
  LayerParameter layer_param;
  layer_param.mutable_hardnet_loss_param()->set_margin(2.5);
  HardNetLossLayer<Dtype> layer(layer_param);
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  this->loss_->mutable_cpu_diff()[0] = Dtype(1);
  layer.Backward(this->top_, vector<bool>{true, true}, this->bottom_);
  std::vector<double> unit(this->anchor_->cpu_diff(),
                           this->anchor_->cpu_diff() + this->anchor_->count());
  // Hand: rows 1 (a=3, p=5... pos d_11 = |3-5|, neg d_10 = |3-1|) and 2
  // (pos d_22 = |7-6|, neg d_21 = |7-5|) are active, R = 3:
  // dE/dx_1 = (sign(3-5) - sign(3-1)) / 3 = -2/3,
  // dE/dx_2 = (sign(7-6) - sign(7-5)) / 3 = 0, dE/dx_0 = 0.
  EXPECT_NEAR(unit[0], 0.0, 1e-5);
  EXPECT_NEAR(unit[2], -2.0 / 3.0, 1e-5);
  EXPECT_NEAR(unit[4], 0.0, 1e-5);
  this->loss_->mutable_cpu_diff()[0] = Dtype(-3.5);
  layer.Backward(this->top_, vector<bool>{true, true}, this->bottom_);
  for (int k = 0; k < this->anchor_->count(); ++k) {
    EXPECT_NEAR(this->anchor_->cpu_diff()[k], -3.5 * unit[k], 1e-5);
  }
}

TYPED_TEST(HardNetLossLayerTest, TestAcceptsNxDx1x1) {
  typedef typename TypeParam::Dtype Dtype;
  this->FillHandBatch({0, 3, 7}, {1, 5, 6});
  const double loss2d = [&]() {
    LayerParameter layer_param;
    HardNetLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    layer.Forward(this->bottom_, this->top_);
    return static_cast<double>(this->loss_->cpu_data()[0]);
  }();
  this->anchor_->Reshape(vector<int>{3, 2, 1, 1});
  this->positive_->Reshape(vector<int>{3, 2, 1, 1});
  LayerParameter layer_param;
  HardNetLossLayer<Dtype> layer(layer_param);
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  EXPECT_EQ(this->loss_->cpu_data()[0], loss2d);
}

// Bad inputs die at set-up/reshape with a message naming what was expected.
TYPED_TEST(HardNetLossLayerTest, TestBadInputsDie) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  LayerParameter layer_param;
  this->FillHandBatch({0, 3, 7}, {1, 5, 6});
  {
    HardNetLossLayer<Dtype> layer(layer_param);
    this->positive_->Reshape(vector<int>{3, 3});
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "positive must have the anchor's shape 3 2");
  }
  {
    HardNetLossLayer<Dtype> layer(layer_param);
    this->positive_->Reshape(vector<int>{2, 2});
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "positive must have the anchor's shape");
  }
  {
    HardNetLossLayer<Dtype> layer(layer_param);
    this->anchor_->Reshape(vector<int>{1, 2});
    this->positive_->Reshape(vector<int>{1, 2});
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_), "needs N >= 2");
  }
  {
    HardNetLossLayer<Dtype> layer(layer_param);
    this->anchor_->Reshape(vector<int>{3, 2, 2, 1});
    this->positive_->Reshape(vector<int>{3, 2, 2, 1});
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "anchor must be N x D");
  }
  {
    HardNetLossLayer<Dtype> layer(layer_param);
    this->FillHandBatch({0, 3, 7}, {1, 5, 6});
    this->UseLabels({1, 2});
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "label must hold N = 3 class ids");
  }
  this->bottom_.resize(2);
  {
    // A valid set-up, then a batch that shrinks below 2 at Reshape.
    HardNetLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    this->anchor_->Reshape(vector<int>{1, 2});
    this->positive_->Reshape(vector<int>{1, 2});
    EXPECT_DEATH(layer.Reshape(this->bottom_, this->top_), "needs N >= 2");
  }
  this->FillHandBatch({0, 3, 7}, {1, 5, 6});
  {
    LayerParameter bad = layer_param;
    bad.mutable_hardnet_loss_param()->set_eps(0);
    HardNetLossLayer<Dtype> layer(bad);
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_), "eps must be > 0");
  }
  {
    LayerParameter bad = layer_param;
    bad.mutable_hardnet_loss_param()->set_margin(-1);
    HardNetLossLayer<Dtype> layer(bad);
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "margin must be >= 0");
  }
  {
    LayerParameter bad = layer_param;
    bad.mutable_hardnet_loss_param()->set_duplicate_threshold(-0.1);
    HardNetLossLayer<Dtype> layer(bad);
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "duplicate_threshold must be >= 0");
  }
  {
    LayerParameter bad = layer_param;
    bad.mutable_hardnet_loss_param()->set_margin(INFINITY);
    HardNetLossLayer<Dtype> layer(bad);
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "hardnet_loss_param.margin must be finite. Got: inf");
  }
  {
    this->UseLabels({1, NAN, 3});
    HardNetLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    EXPECT_DEATH(layer.Forward(this->bottom_, this->top_),
                 "must hold finite class ids, got nan at index 1");
  }
  {
    this->UseLabels({1, 2, 3});
    HardNetLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    layer.Forward(this->bottom_, this->top_);
    EXPECT_DEATH(layer.Backward(this->top_, vector<bool>{true, true, true},
                                this->bottom_),
                 "cannot backpropagate to label");
  }
}

}  // namespace caffe
