#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/layers/triplet_loss_layer.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

namespace triplet_test {

const TripletLossParameter::Mining kMinings[] = {
    TripletLossParameter::BATCH_HARD, TripletLossParameter::BATCH_ALL,
    TripletLossParameter::SEMI_HARD};

// The loss and the mined triplets, by loops over the header's definitions
// (double, distances from the coordinates, not from a GEMM).
struct LoopResult {
  double loss;
  long long terms;
  std::vector<std::vector<int> > triplets;  // BATCH_HARD, SEMI_HARD rows
};

double Distance(const std::vector<double>& x, int dim, int i, int j,
                const TripletLossParameter& param) {
  double sq = 0;
  for (int k = 0; k < dim; ++k) sq += std::pow(x[i * dim + k] - x[j * dim + k], 2);
  return param.squared() ? sq : std::sqrt(sq + param.eps());
}

double Term(const TripletLossParameter& param, double d_ap, double d_an) {
  if (param.soft_margin()) return std::log1p(std::exp(d_ap - d_an));
  return std::max(param.margin() + d_ap - d_an, 0.0);
}

LoopResult LoopLoss(const std::vector<double>& x, int dim,
                    const std::vector<double>& y,
                    const TripletLossParameter& param) {
  const int num = static_cast<int>(y.size());
  LoopResult result = {0.0, 0, {}};
  double sum = 0;
  for (int a = 0; a < num; ++a) {
    std::vector<int> pos, neg;
    for (int j = 0; j < num; ++j) {
      if (j != a && y[j] == y[a]) pos.push_back(j);
      if (y[j] != y[a]) neg.push_back(j);
    }
    auto d = [&](int j) { return Distance(x, dim, a, j, param); };
    if (param.mining() == TripletLossParameter::BATCH_HARD) {
      if (pos.empty() || neg.empty()) {
        result.triplets.push_back({a, -1, -1});
        continue;
      }
      int p = pos[0], n = neg[0];
      for (int j : pos) if (d(j) > d(p)) p = j;
      for (int j : neg) if (d(j) < d(n)) n = j;
      result.triplets.push_back({a, p, n});
      sum += Term(param, d(p), d(n));
      ++result.terms;
    } else if (param.mining() == TripletLossParameter::SEMI_HARD) {
      for (int p : pos) {
        if (neg.empty()) {
          result.triplets.push_back({a, p, -1});
          continue;
        }
        int beyond = -1, farthest = neg[0];
        for (int j : neg) {
          if (d(j) > d(p) && (beyond < 0 || d(j) < d(beyond))) beyond = j;
          if (d(j) > d(farthest)) farthest = j;
        }
        const int n = beyond >= 0 ? beyond : farthest;
        result.triplets.push_back({a, p, n});
        sum += Term(param, d(p), d(n));
        ++result.terms;
      }
    } else {
      for (int p : pos) {
        for (int n : neg) {
          const double t = Term(param, d(p), d(n));
          sum += t;
          if (t > 0) ++result.terms;
        }
      }
    }
  }
  result.loss = result.terms > 0 ? sum / result.terms : 0.0;
  return result;
}

// Whether every decision and hinge of the batch is at least `gap` from a
// tie or a kink, so that finite differences stay on one smooth piece.
bool AwayFromKinks(const std::vector<double>& x, int dim,
                   const std::vector<double>& y,
                   const TripletLossParameter& param, double gap) {
  const int num = static_cast<int>(y.size());
  for (int a = 0; a < num; ++a) {
    std::vector<double> row;
    for (int j = 0; j < num; ++j) {
      if (j != a) row.push_back(Distance(x, dim, a, j, param));
    }
    std::sort(row.begin(), row.end());
    for (size_t k = 1; k < row.size(); ++k) {
      if (row[k] - row[k - 1] < gap) return false;
    }
    if (param.soft_margin()) continue;
    for (int p = 0; p < num; ++p) {
      for (int n = 0; n < num; ++n) {
        if (p == a || y[p] != y[a] || y[n] == y[a]) continue;
        const double hinge = param.margin() + Distance(x, dim, a, p, param) -
                             Distance(x, dim, a, n, param);
        if (std::fabs(hinge) < gap) return false;
      }
    }
  }
  return true;
}

}  // namespace triplet_test

template <typename TypeParam>
class TripletLossLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  TripletLossLayerTest()
      : embedding_(new Blob<Dtype>()), label_(new Blob<Dtype>()),
        loss_(new Blob<Dtype>()), mining_(new Blob<Dtype>()) {
    bottom_.push_back(embedding_);
    bottom_.push_back(label_);
    top_.push_back(loss_);
  }
  virtual ~TripletLossLayerTest() {
    delete embedding_;
    delete label_;
    delete loss_;
    delete mining_;
  }

  void Fill(int dim, const std::vector<double>& x,
            const std::vector<double>& y) {
    const int num = static_cast<int>(y.size());
    embedding_->Reshape(vector<int>{num, dim});
    label_->Reshape(vector<int>{num});
    for (int k = 0; k < num * dim; ++k) embedding_->mutable_cpu_data()[k] = x[k];
    for (int i = 0; i < num; ++i) label_->mutable_cpu_data()[i] = y[i];
  }
  void WithMiningTop() { top_.push_back(mining_); }

  // Random embeddings (about three rows a class) with every decision and hinge
  // `gap` away from a tie or a kink.
  void FillAwayFromKinks(int num, int dim, const TripletLossParameter& param,
                         std::vector<double>* x, std::vector<double>* y) {
    std::mt19937 engine(4321);
    std::normal_distribution<double> normal(0.0, 1.0);
    const double gap = 0.05;
    for (int attempt = 0; attempt < 200000; ++attempt) {
      y->assign(num, 0);
      for (int i = 0; i < num; ++i) (*y)[i] = i % ((num + 2) / 3);
      x->assign(num * dim, 0);
      for (size_t k = 0; k < x->size(); ++k) (*x)[k] = 0.5 * normal(engine);
      if (triplet_test::AwayFromKinks(*x, dim, *y, param, gap)) {
        Fill(dim, *x, *y);
        return;
      }
    }
    FAIL() << "no kink-free batch found";
  }
  Dtype Tolerance() const { return sizeof(Dtype) == 4 ? 2e-5 : 1e-12; }
  // GradientChecker settings: float 1e-2 / 1e-3, double 1e-4 / 1e-6 (kinks
  // are 5 steps away).
  Dtype StepSize() const { return sizeof(Dtype) == 4 ? 1e-2 : 1e-4; }
  Dtype Threshold() const { return sizeof(Dtype) == 4 ? 1e-3 : 1e-6; }

  Blob<Dtype>* const embedding_;
  Blob<Dtype>* const label_;
  Blob<Dtype>* const loss_;
  Blob<Dtype>* const mining_;
  vector<Blob<Dtype>*> bottom_;
  vector<Blob<Dtype>*> top_;
};

TYPED_TEST_CASE(TripletLossLayerTest, TestDtypesAndDevices);

TYPED_TEST(TripletLossLayerTest, TestDefaults) {
  const TripletLossParameter param;
  EXPECT_FLOAT_EQ(param.margin(), 0.2f);
  EXPECT_FALSE(param.soft_margin());
  EXPECT_FALSE(param.squared());
  EXPECT_EQ(param.mining(), TripletLossParameter::BATCH_HARD);
  EXPECT_FLOAT_EQ(param.eps(), 1e-12f);
}

// Points on a line at small integers: every distance exact, equal ones tie.
// Anchor 0 at 0 has positives at 2, 2 (rows 1, 2: tie -> 1) and negatives at
// 3, 3 (rows 3, 4: tie -> 3). margin 0.2: terms 0, 3.2, 3.2, 5.2, 5.2.
TYPED_TEST(TripletLossLayerTest, TestBatchHardHandComputed) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(1, {0, 2, -2, 3, -3}, {0, 0, 0, 1, 1});
  this->WithMiningTop();
  LayerParameter layer_param;
  TripletLossLayer<Dtype> layer(layer_param);
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  EXPECT_NEAR(this->loss_->cpu_data()[0], 16.8 / 5, 1e-5);
  const int expected[5][3] = {{0, 1, 3}, {1, 2, 3}, {2, 1, 4}, {3, 4, 1},
                              {4, 3, 2}};
  ASSERT_EQ(this->mining_->shape_string(), "5 3 (15)");
  for (int r = 0; r < 5; ++r) {
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(this->mining_->cpu_data()[3 * r + c], expected[r][c])
          << "row " << r << " column " << c;
    }
  }
}

// Semi-hard: the closest negative strictly farther than d_ap, else the
// farthest one (hand-derived, see tests/test_triplet.py).
TYPED_TEST(TripletLossLayerTest, TestSemiHardHandComputed) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(1, {0, 1, 3, 2, -4, 5, -2}, {0, 0, 0, 1, 1, 1, 1});
  this->WithMiningTop();
  LayerParameter layer_param;
  layer_param.mutable_triplet_loss_param()->set_mining(
      TripletLossParameter::SEMI_HARD);
  TripletLossLayer<Dtype> layer(layer_param);
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  const int expected[18][3] = {
      {0, 1, 3}, {0, 2, 4}, {1, 0, 6}, {1, 2, 6}, {2, 0, 6}, {2, 1, 6},
      {3, 4, 0}, {3, 5, 0}, {3, 6, 0}, {4, 3, 2}, {4, 5, 2}, {4, 6, 0},
      {5, 3, 1}, {5, 4, 0}, {5, 6, 0}, {6, 3, 2}, {6, 4, 1}, {6, 5, 2}};
  ASSERT_EQ(this->mining_->shape_string(), "18 3 (54)");
  for (int r = 0; r < 18; ++r) {
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(this->mining_->cpu_data()[3 * r + c], expected[r][c])
          << "row " << r << " column " << c;
    }
  }
}

// Batch all, squared, margin 3: two active terms (43 and 48) of 8, one at the
// kink (0, inactive): E = 91 / 2; dE/dx = (3, 2, -19, 14) by hand.
TYPED_TEST(TripletLossLayerTest, TestBatchAllActiveMean) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(1, {0, 1, 3, 10}, {0, 0, 1, 1});
  this->WithMiningTop();
  LayerParameter layer_param;
  TripletLossParameter* param = layer_param.mutable_triplet_loss_param();
  param->set_mining(TripletLossParameter::BATCH_ALL);
  param->set_squared(true);
  param->set_margin(3);
  TripletLossLayer<Dtype> layer(layer_param);
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  EXPECT_EQ(this->loss_->cpu_data()[0], Dtype(45.5));
  EXPECT_EQ(this->mining_->count(), 1);
  EXPECT_EQ(this->mining_->cpu_data()[0], Dtype(2));
  this->loss_->mutable_cpu_diff()[0] = Dtype(1);
  layer.Backward(this->top_, vector<bool>{true, false}, this->bottom_);
  const double grad[4] = {3, 2, -19, 14};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(this->embedding_->cpu_diff()[i], Dtype(grad[i])) << "row " << i;
  }
}

// A batch without a term: E = 0, the gradient 0, never NaN.
TYPED_TEST(TripletLossLayerTest, TestNoTermGivesZero) {
  typedef typename TypeParam::Dtype Dtype;
  const std::vector<std::vector<double> > label_sets = {{2, 2, 2}, {0, 1, 2}};
  for (auto mining : triplet_test::kMinings) {
    for (bool soft : {false, true}) {
      for (const auto& labels : label_sets) {
        this->Fill(2, {0, 1, 3, 1, -2, 0.5}, labels);
        LayerParameter layer_param;
        layer_param.mutable_triplet_loss_param()->set_mining(mining);
        layer_param.mutable_triplet_loss_param()->set_soft_margin(soft);
        TripletLossLayer<Dtype> layer(layer_param);
        layer.SetUp(this->bottom_, this->top_);
        layer.Forward(this->bottom_, this->top_);
        EXPECT_EQ(this->loss_->cpu_data()[0], Dtype(0)) << mining;
        this->loss_->mutable_cpu_diff()[0] = Dtype(1);
        layer.Backward(this->top_, vector<bool>{true, false}, this->bottom_);
        for (int k = 0; k < this->embedding_->count(); ++k) {
          EXPECT_EQ(this->embedding_->cpu_diff()[k], Dtype(0)) << mining;
        }
      }
    }
  }
}

TYPED_TEST(TripletLossLayerTest, TestNonFiniteInputGivesNaN) {
  typedef typename TypeParam::Dtype Dtype;
  for (auto mining : triplet_test::kMinings) {
    this->Fill(1, {0, 1, 3}, {0, 0, 1});
    this->embedding_->mutable_cpu_data()[1] = std::numeric_limits<Dtype>::quiet_NaN();
    LayerParameter layer_param;
    layer_param.mutable_triplet_loss_param()->set_mining(mining);
    TripletLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    layer.Forward(this->bottom_, this->top_);
    EXPECT_TRUE(std::isnan(this->loss_->cpu_data()[0])) << mining;
    this->loss_->mutable_cpu_diff()[0] = Dtype(1);
    layer.Backward(this->top_, vector<bool>{true, false}, this->bottom_);
    for (int k = 0; k < 3; ++k) {
      EXPECT_TRUE(std::isnan(this->embedding_->cpu_diff()[k])) << mining;
    }
  }
}

// Random batches against the loop reference, every option.
TYPED_TEST(TripletLossLayerTest, TestForwardMatchesLoopReference) {
  typedef typename TypeParam::Dtype Dtype;
  std::mt19937 engine(99);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (auto mining : triplet_test::kMinings) {
    for (bool soft : {false, true}) {
      for (bool squared : {false, true}) {
        LayerParameter layer_param;
        TripletLossParameter* param = layer_param.mutable_triplet_loss_param();
        param->set_mining(mining);
        param->set_soft_margin(soft);
        param->set_squared(squared);
        param->set_margin(0.5);
        const int num = 9, dim = 4;
        std::vector<double> x(num * dim), y(num);
        for (auto& v : x) v = 0.5 * normal(engine);
        for (int i = 0; i < num; ++i) y[i] = (i * 7) % 4;
        this->Fill(dim, x, y);
        // The values the layer sees (float rounding) for the reference too.
        for (int k = 0; k < num * dim; ++k) x[k] = this->embedding_->cpu_data()[k];
        const triplet_test::LoopResult expected =
            triplet_test::LoopLoss(x, dim, y, *param);
        if (this->top_.size() == 1) this->WithMiningTop();
        TripletLossLayer<Dtype> layer(layer_param);
        layer.SetUp(this->bottom_, this->top_);
        layer.Forward(this->bottom_, this->top_);
        SCOPED_TRACE(::testing::Message() << "mining " << mining << " soft "
                     << soft << " squared " << squared);
        EXPECT_NEAR(this->loss_->cpu_data()[0], expected.loss,
                    this->Tolerance() * (1 + expected.loss));
        if (mining == TripletLossParameter::BATCH_ALL) {
          EXPECT_EQ(this->mining_->cpu_data()[0], Dtype(expected.terms));
        } else {
          ASSERT_EQ(this->mining_->shape(0),
                    static_cast<int>(expected.triplets.size()));
          for (int r = 0; r < this->mining_->shape(0); ++r) {
            for (int c = 0; c < 3; ++c) {
              EXPECT_EQ(this->mining_->cpu_data()[3 * r + c],
                        expected.triplets[r][c]) << "row " << r;
            }
          }
        }
      }
    }
  }
}

// Exact gradients, every option, at a kink-free batch.
TYPED_TEST(TripletLossLayerTest, TestGradient) {
  typedef typename TypeParam::Dtype Dtype;
  for (auto mining : triplet_test::kMinings) {
    for (bool soft : {false, true}) {
      for (bool squared : {false, true}) {
        LayerParameter layer_param;
        TripletLossParameter* param = layer_param.mutable_triplet_loss_param();
        param->set_mining(mining);
        param->set_soft_margin(soft);
        param->set_squared(squared);
        param->set_margin(0.5);
        SCOPED_TRACE(::testing::Message() << "mining " << mining << " soft "
                     << soft << " squared " << squared);
        std::vector<double> x, y;
        this->FillAwayFromKinks(6, 3, *param, &x, &y);
        TripletLossLayer<Dtype> layer(layer_param);
        layer.SetUp(this->bottom_, this->top_);
        GradientChecker<Dtype> checker(this->StepSize(), this->Threshold(),
                                       1701);
        checker.CheckGradientExhaustive(&layer, this->bottom_, this->top_, 0);
      }
    }
  }
}

TYPED_TEST(TripletLossLayerTest, TestChangingBatchSize) {
  typedef typename TypeParam::Dtype Dtype;
  LayerParameter layer_param;
  TripletLossParameter* param = layer_param.mutable_triplet_loss_param();
  param->set_mining(TripletLossParameter::SEMI_HARD);
  param->set_margin(0.5);
  this->WithMiningTop();
  TripletLossLayer<Dtype> layer(layer_param);
  bool set_up = false;
  for (int num : {4, 7, 3, 6}) {
    std::vector<double> x, y;
    this->FillAwayFromKinks(num, 2, *param, &x, &y);
    for (int k = 0; k < num * 2; ++k) x[k] = this->embedding_->cpu_data()[k];
    if (!set_up) {
      layer.SetUp(this->bottom_, this->top_);
      set_up = true;
    }
    layer.Reshape(this->bottom_, this->top_);
    layer.Forward(this->bottom_, this->top_);
    const triplet_test::LoopResult expected =
        triplet_test::LoopLoss(x, 2, y, *param);
    EXPECT_NEAR(this->loss_->cpu_data()[0], expected.loss,
                this->Tolerance() * (1 + expected.loss)) << "N = " << num;
    EXPECT_EQ(this->mining_->shape(0),
              static_cast<int>(expected.triplets.size())) << "N = " << num;
  }
}

TYPED_TEST(TripletLossLayerTest, TestLossWeightScalesGradient) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(1, {0, 2, -2, 3, -3}, {0, 0, 0, 1, 1});
  LayerParameter layer_param;
  TripletLossLayer<Dtype> layer(layer_param);
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  this->loss_->mutable_cpu_diff()[0] = Dtype(1);
  layer.Backward(this->top_, vector<bool>{true, false}, this->bottom_);
  std::vector<double> unit(this->embedding_->cpu_diff(),
                           this->embedding_->cpu_diff() + 5);
  this->loss_->mutable_cpu_diff()[0] = Dtype(-2.5);
  layer.Backward(this->top_, vector<bool>{true, false}, this->bottom_);
  for (int k = 0; k < 5; ++k) {
    EXPECT_NEAR(this->embedding_->cpu_diff()[k], -2.5 * unit[k], 1e-5);
  }
}

// Bad inputs die at set-up or forward with a message naming what was wrong.
TYPED_TEST(TripletLossLayerTest, TestBadInputsDie) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  {
    this->Fill(1, {0, 1, 3}, {0, 0, 1});
    LayerParameter layer_param;
    layer_param.mutable_triplet_loss_param()->set_margin(-1);
    TripletLossLayer<Dtype> layer(layer_param);
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "triplet_loss_param.margin must be >= 0");
  }
  {
    this->Fill(1, {0, 1, 3}, {0, 0, 1});
    LayerParameter layer_param;
    layer_param.mutable_triplet_loss_param()->set_eps(0);
    TripletLossLayer<Dtype> layer(layer_param);
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "triplet_loss_param.eps must be > 0");
  }
  {
    this->Fill(1, {0, 1, 3}, {0, 0.5, 1});
    LayerParameter layer_param;
    TripletLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    EXPECT_DEATH(layer.Forward(this->bottom_, this->top_),
                 "finite integer class ids, got 0.5 at index 1");
  }
}

}  // namespace caffe
