#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/layers/margin_loss_layer.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

namespace margin_test {

// E of given triplets, from the header's formula, in double.
double LossOfTriplets(const std::vector<double>& x, int dim,
    const std::vector<double>& labels, const std::vector<double>& beta,
    int num_classes, double margin, double nu, double eps,
    const std::vector<int>& triplets, int* active) {
  double sum = 0;
  *active = 0;
  for (size_t t = 0; t + 2 < triplets.size(); t += 3) {
    const int a = triplets[t], p = triplets[t + 1], n = triplets[t + 2];
    double sq_ap = 0, sq_an = 0;
    for (int k = 0; k < dim; ++k) {
      sq_ap += std::pow(x[a * dim + k] - x[p * dim + k], 2);
      sq_an += std::pow(x[a * dim + k] - x[n * dim + k], 2);
    }
    const double b = beta[num_classes > 0 ? static_cast<int>(labels[a]) : 0];
    const double pos = std::sqrt(sq_ap + eps) - b + margin;
    const double neg = b - std::sqrt(sq_an + eps) + margin;
    sum += std::max(pos, 0.0) + std::max(neg, 0.0) + nu * b;
    *active += (pos > 0) + (neg > 0);
  }
  return *active > 0 ? sum / *active : 0.0;
}

// Draws the same triplets at every forward pass (its pass count stays 0), so
// that the finite differences of GradientChecker see the analytic pass's.
template <typename Dtype>
class FixedDrawMarginLossLayer : public MarginLossLayer<Dtype> {
 public:
  explicit FixedDrawMarginLossLayer(const LayerParameter& param)
      : MarginLossLayer<Dtype>(param) {}

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top) {
    this->passes_ = 0;
    MarginLossLayer<Dtype>::Forward_cpu(bottom, top);
  }
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top) {
    this->passes_ = 0;
    MarginLossLayer<Dtype>::Forward_gpu(bottom, top);
  }
};

}  // namespace margin_test

template <typename TypeParam>
class MarginLossLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  MarginLossLayerTest()
      : embedding_(new Blob<Dtype>()), label_(new Blob<Dtype>()),
        loss_(new Blob<Dtype>()), triplets_(new Blob<Dtype>()) {
    bottom_.push_back(embedding_);
    bottom_.push_back(label_);
    top_.push_back(loss_);
  }
  virtual ~MarginLossLayerTest() {
    delete embedding_;
    delete label_;
    delete loss_;
    delete triplets_;
  }

  double Tolerance() const { return sizeof(Dtype) == 4 ? 2e-5 : 1e-12; }

  void Fill(int dim, const std::vector<double>& x,
            const std::vector<double>& labels) {
    const int num = static_cast<int>(labels.size());
    embedding_->Reshape(vector<int>{num, dim});
    label_->Reshape(vector<int>{num});
    for (int k = 0; k < num * dim; ++k) {
      embedding_->mutable_cpu_data()[k] = Dtype(x[k]);
    }
    for (int i = 0; i < num; ++i) label_->mutable_cpu_data()[i] = Dtype(labels[i]);
  }
  // P classes of K rows each, every class around its own direction,
  // L2-normalised; returns the rows (as stored, in Dtype) and labels.
  void FillClasses(int classes, int per_class, int dim, unsigned seed,
                   double spread, std::vector<double>* x,
                   std::vector<double>* labels) {
    std::mt19937 engine(seed);
    std::normal_distribution<double> normal;
    std::vector<double> centre(classes * dim);
    for (double& c : centre) c = normal(engine);
    x->assign(classes * per_class * dim, 0);
    labels->assign(classes * per_class, 0);
    for (int i = 0; i < classes * per_class; ++i) {
      (*labels)[i] = i / per_class;
      double norm = 0;
      for (int k = 0; k < dim; ++k) {
        const double v = centre[(i / per_class) * dim + k] + spread * normal(engine);
        (*x)[i * dim + k] = v;
        norm += v * v;
      }
      for (int k = 0; k < dim; ++k) {
        (*x)[i * dim + k] = static_cast<double>(Dtype((*x)[i * dim + k] / std::sqrt(norm)));
      }
    }
    Fill(dim, *x, *labels);
  }
  std::vector<int> Triplets() const {
    std::vector<int> t(triplets_->count());
    for (int k = 0; k < triplets_->count(); ++k) {
      t[k] = static_cast<int>(triplets_->cpu_data()[k]);
    }
    return t;
  }
  void WithTripletsTop() { top_.resize(1); top_.push_back(triplets_); }

  Dtype StepSize() const { return sizeof(Dtype) == 4 ? 1e-2 : 1e-4; }
  Dtype Threshold() const { return sizeof(Dtype) == 4 ? 1e-3 : 1e-6; }

  Blob<Dtype>* const embedding_;
  Blob<Dtype>* const label_;
  Blob<Dtype>* const loss_;
  Blob<Dtype>* const triplets_;
  vector<Blob<Dtype>*> bottom_;
  vector<Blob<Dtype>*> top_;
};

TYPED_TEST_CASE(MarginLossLayerTest, TestDtypesAndDevices);

TYPED_TEST(MarginLossLayerTest, TestDefaultsAndBetaBlob) {
  typedef typename TypeParam::Dtype Dtype;
  LayerParameter layer_param;
  const MarginLossParameter& p = layer_param.margin_loss_param();
  EXPECT_FLOAT_EQ(p.margin(), 0.2f);
  EXPECT_FLOAT_EQ(p.beta_init(), 1.2f);
  EXPECT_EQ(p.nu(), 0.0f);
  EXPECT_EQ(p.num_classes(), 0);
  EXPECT_EQ(p.negatives_per_positive(), 1);
  EXPECT_EQ(p.sampler(), MarginLossParameter::DISTANCE_WEIGHTED);
  EXPECT_FLOAT_EQ(p.cutoff(), 0.5f);
  EXPECT_FLOAT_EQ(p.nonzero_loss_cutoff(), 1.4f);
  EXPECT_FLOAT_EQ(p.eps(), 1e-8f);
  EXPECT_EQ(p.seed(), 0u);
  std::vector<double> x, labels;
  this->FillClasses(2, 2, 3, 1, 0.5, &x, &labels);
  MarginLossLayer<Dtype> layer(layer_param);
  layer.SetUp(this->bottom_, this->top_);
  ASSERT_EQ(layer.blobs().size(), 1);
  ASSERT_EQ(layer.blobs()[0]->count(), 1);
  EXPECT_EQ(layer.blobs()[0]->cpu_data()[0], Dtype(1.2f));
  layer_param.mutable_margin_loss_param()->set_num_classes(3);
  layer_param.mutable_margin_loss_param()->set_beta_init(0.9f);
  MarginLossLayer<Dtype> per_class(layer_param);
  per_class.SetUp(this->bottom_, this->top_);
  ASSERT_EQ(per_class.blobs()[0]->count(), 3);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(per_class.blobs()[0]->cpu_data()[c], Dtype(0.9f));
  }
}

// Rows 0, 1 of class 0, row 2 of class 1 (d01 = sqrt(0.8), d02 = sqrt(2),
// d12 = sqrt(0.4)); UNIFORM so both anchors draw row 2. beta = 0.5, nu = 0.1:
// t0 = (0, 1, 2) has its positive hinge open, t1 = (1, 0, 2) both: C = 3.
TYPED_TEST(MarginLossLayerTest, TestForwardBackwardHandComputed) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(2, {1, 0, 0.6, 0.8, 0, 1}, {0, 0, 1});
  this->WithTripletsTop();
  LayerParameter layer_param;
  MarginLossParameter* param = layer_param.mutable_margin_loss_param();
  param->set_sampler(MarginLossParameter::UNIFORM);
  param->set_beta_init(0.5);
  param->set_nu(0.1f);
  MarginLossLayer<Dtype> layer(layer_param);
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  EXPECT_EQ(this->Triplets(), (std::vector<int>{0, 1, 2, 1, 0, 2}));
  // The proto's floats as the layer reads them (0.2f is not 0.2).
  const double eps = static_cast<double>(1e-8f), nu = static_cast<double>(0.1f);
  const double margin = static_cast<double>(0.2f);
  const double d01 = std::sqrt(0.8 + eps), d12 = std::sqrt(0.4 + eps);
  const double expected =
      ((d01 - 0.5 + margin) * 2 + (0.5 + margin - d12) + 2 * nu * 0.5) / 3;
  EXPECT_NEAR(this->loss_->cpu_data()[0], expected, this->Tolerance());
  this->loss_->mutable_cpu_diff()[0] = Dtype(2);
  layer.Backward(this->top_, vector<bool>{true, false}, this->bottom_);
  EXPECT_NEAR(layer.blobs()[0]->cpu_diff()[0], 2 * (-1 + 2 * nu) / 3,
              this->Tolerance());
  // dE/dx_0 = 2 (x0 - x1) / d01 / 3 * 2 (two open positive hinges on (0, 1))
  const double g = 2.0 / 3.0;
  EXPECT_NEAR(this->embedding_->cpu_diff()[0], g * 2 * 0.4 / d01, 1e-5);
  EXPECT_NEAR(this->embedding_->cpu_diff()[1], g * 2 * -0.8 / d01, 1e-5);
  // dE/dx_2 = -(x2 - x1) / d12: the open negative hinge pushes row 2 away
  EXPECT_NEAR(this->embedding_->cpu_diff()[4], g * (0.6 - 0) / d12, 1e-5);
  EXPECT_NEAR(this->embedding_->cpu_diff()[5], g * (0.8 - 1) / d12, 1e-5);
  // beta's diff accumulates (iter_size); the embedding's is overwritten.
  layer.Backward(this->top_, vector<bool>{true, false}, this->bottom_);
  EXPECT_NEAR(layer.blobs()[0]->cpu_diff()[0], 4 * (-1 + 2 * nu) / 3,
              this->Tolerance());
  EXPECT_NEAR(this->embedding_->cpu_diff()[0], g * 2 * 0.4 / d01, 1e-5);
}

// The loss from the layer's own triplets, and the triplets obey the rule:
// same-class positives (every one, negatives_per_positive times), negatives of
// another class.
TYPED_TEST(MarginLossLayerTest, TestForwardMatchesItsTriplets) {
  typedef typename TypeParam::Dtype Dtype;
  std::vector<double> x, labels;
  this->FillClasses(4, 3, 6, 7, 1.0, &x, &labels);
  this->WithTripletsTop();
  for (int sampler = 0; sampler < 2; ++sampler) {
    LayerParameter layer_param;
    MarginLossParameter* param = layer_param.mutable_margin_loss_param();
    param->set_sampler(static_cast<MarginLossParameter::Sampler>(sampler));
    param->set_negatives_per_positive(2);
    param->set_nonzero_loss_cutoff(0);
    param->set_nu(0.05f);
    param->set_num_classes(4);
    MarginLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    layer.blobs()[0]->mutable_cpu_data()[2] = Dtype(0.8);
    layer.Forward(this->bottom_, this->top_);
    const std::vector<int> t = this->Triplets();
    ASSERT_EQ(t.size(), 12u * 2 * 2 * 3);
    for (size_t k = 0; k < t.size(); k += 3) {
      EXPECT_EQ(labels[t[k]], labels[t[k + 1]]);
      EXPECT_NE(t[k], t[k + 1]);
      EXPECT_NE(labels[t[k]], labels[t[k + 2]]);
    }
    std::vector<double> beta(layer.blobs()[0]->cpu_data(),
                             layer.blobs()[0]->cpu_data() + 4);
    int active = 0;
    const double expected = margin_test::LossOfTriplets(x, 6, labels, beta, 4,
        static_cast<double>(0.2f), static_cast<double>(0.05f), static_cast<double>(1e-8f), t, &active);
    EXPECT_GT(active, 0);
    EXPECT_NEAR(this->loss_->cpu_data()[0], expected, this->Tolerance());
  }
}

// The draws are keyed by (seed, pass): two layers with one seed draw alike,
// the next pass draws anew, another seed differs.
TYPED_TEST(MarginLossLayerTest, TestDrawsFollowSeedAndPass) {
  typedef typename TypeParam::Dtype Dtype;
  std::vector<double> x, labels;
  this->FillClasses(4, 4, 8, 3, 1.5, &x, &labels);
  this->WithTripletsTop();
  LayerParameter layer_param;
  layer_param.mutable_margin_loss_param()->set_seed(77);
  layer_param.mutable_margin_loss_param()->set_nonzero_loss_cutoff(0);
  std::vector<std::vector<int> > draws;
  for (int copy = 0; copy < 2; ++copy) {
    MarginLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    layer.Forward(this->bottom_, this->top_);
    draws.push_back(this->Triplets());
    layer.Forward(this->bottom_, this->top_);
    draws.push_back(this->Triplets());
  }
  EXPECT_EQ(draws[0], draws[2]);
  EXPECT_EQ(draws[1], draws[3]);
  EXPECT_NE(draws[0], draws[1]);
  layer_param.mutable_margin_loss_param()->set_seed(78);
  MarginLossLayer<Dtype> other(layer_param);
  other.SetUp(this->bottom_, this->top_);
  other.Forward(this->bottom_, this->top_);
  EXPECT_NE(this->Triplets(), draws[0]);
}

// Singletons only: no anchor has a positive, T = 0, E = 0, zero gradients.
TYPED_TEST(MarginLossLayerTest, TestNoTripletGivesZero) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(2, {1, 0, 0.6, 0.8, 0, 1}, {0, 1, 2});
  this->WithTripletsTop();
  LayerParameter layer_param;
  layer_param.mutable_margin_loss_param()->set_nu(0.5);
  MarginLossLayer<Dtype> layer(layer_param);
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  EXPECT_EQ(this->triplets_->shape(0), 0);
  EXPECT_EQ(this->loss_->cpu_data()[0], Dtype(0));
  this->loss_->mutable_cpu_diff()[0] = Dtype(1);
  layer.Backward(this->top_, vector<bool>{true, false}, this->bottom_);
  EXPECT_EQ(layer.blobs()[0]->cpu_diff()[0], Dtype(0));
  for (int k = 0; k < this->embedding_->count(); ++k) {
    EXPECT_EQ(this->embedding_->cpu_diff()[k], Dtype(0));
  }
}

TYPED_TEST(MarginLossLayerTest, TestNonFiniteInputGivesNaN) {
  typedef typename TypeParam::Dtype Dtype;
  std::vector<double> x, labels;
  this->FillClasses(2, 3, 4, 5, 0.5, &x, &labels);
  this->embedding_->mutable_cpu_data()[5] = Dtype(NAN);
  this->WithTripletsTop();
  LayerParameter layer_param;
  MarginLossLayer<Dtype> layer(layer_param);
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  EXPECT_TRUE(std::isnan(this->loss_->cpu_data()[0]));
  EXPECT_EQ(this->triplets_->shape(0), 0);
  this->loss_->mutable_cpu_diff()[0] = Dtype(1);
  layer.Backward(this->top_, vector<bool>{true, false}, this->bottom_);
  EXPECT_TRUE(std::isnan(layer.blobs()[0]->cpu_diff()[0]));
  for (int k = 0; k < this->embedding_->count(); ++k) {
    EXPECT_TRUE(std::isnan(this->embedding_->cpu_diff()[k]));
  }
}

// GradientChecker on the embedding and on beta (the layer's blob, always
// checked), the draws held fixed. float: UNIFORM (its draws do not move with
// a 1e-2 step); double: DISTANCE_WEIGHTED too (step 1e-4). One beta and one
// per class, with nu. The batches are fixed, chosen so that no hinge sits
// within a step of its kink.
TYPED_TEST(MarginLossLayerTest, TestGradient) {
  typedef typename TypeParam::Dtype Dtype;
  const bool is_float = sizeof(Dtype) == 4;
  for (int sampler = 0; sampler < 2; ++sampler) {
    if (is_float && sampler == 0) continue;
    for (int num_classes : {0, 3}) {
      std::vector<double> x, labels;
      this->FillClasses(3, 2, 4, 11 + num_classes, 0.8, &x, &labels);
      LayerParameter layer_param;
      MarginLossParameter* param = layer_param.mutable_margin_loss_param();
      param->set_sampler(static_cast<MarginLossParameter::Sampler>(sampler));
      param->set_num_classes(num_classes);
      param->set_negatives_per_positive(2);
      param->set_nonzero_loss_cutoff(0);
      param->set_nu(0.1f);
      param->set_beta_init(1.0f);
      SCOPED_TRACE(::testing::Message() << "sampler " << sampler
                   << " num_classes " << num_classes);
      margin_test::FixedDrawMarginLossLayer<Dtype> layer(layer_param);
      layer.SetUp(this->bottom_, this->top_);
      GradientChecker<Dtype> checker(this->StepSize(), this->Threshold(), 1701);
      checker.CheckGradientExhaustive(&layer, this->bottom_, this->top_, 0);
    }
  }
}

TYPED_TEST(MarginLossLayerTest, TestChangingBatchSize) {
  typedef typename TypeParam::Dtype Dtype;
  std::vector<double> x, labels;
  this->FillClasses(3, 3, 4, 2, 0.8, &x, &labels);
  this->WithTripletsTop();
  LayerParameter layer_param;
  layer_param.mutable_margin_loss_param()->set_sampler(MarginLossParameter::UNIFORM);
  MarginLossLayer<Dtype> layer(layer_param);
  layer.SetUp(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  EXPECT_EQ(this->triplets_->shape(0), 9 * 2);
  this->FillClasses(5, 4, 4, 2, 0.8, &x, &labels);
  layer.Reshape(this->bottom_, this->top_);
  layer.Forward(this->bottom_, this->top_);
  EXPECT_EQ(this->triplets_->shape(0), 20 * 3);
  int active = 0;
  const double expected = margin_test::LossOfTriplets(x, 4, labels,
      {static_cast<double>(1.2f)}, 0,
      static_cast<double>(0.2f), 0, static_cast<double>(1e-8f), this->Triplets(), &active);
  EXPECT_NEAR(this->loss_->cpu_data()[0], expected, this->Tolerance());
}

TYPED_TEST(MarginLossLayerTest, TestBadInputsDie) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  std::vector<double> x, labels;
  this->FillClasses(2, 2, 3, 1, 0.5, &x, &labels);
  LayerParameter layer_param;
  {
    LayerParameter bad = layer_param;
    bad.mutable_margin_loss_param()->set_cutoff(0);
    MarginLossLayer<Dtype> layer(bad);
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "margin_loss_param.cutoff must be > 0. Got: 0");
  }
  {
    LayerParameter bad = layer_param;
    bad.mutable_margin_loss_param()->set_negatives_per_positive(0);
    MarginLossLayer<Dtype> layer(bad);
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "negatives_per_positive must be >= 1");
  }
  {
    this->label_->Reshape(vector<int>{3});
    MarginLossLayer<Dtype> layer(layer_param);
    EXPECT_DEATH(layer.SetUp(this->bottom_, this->top_),
                 "label must hold N = 4 class ids");
    this->label_->Reshape(vector<int>{4});
  }
  this->Fill(3, x, {0, 0, 1.5, 1.5});
  {
    MarginLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    EXPECT_DEATH(layer.Forward(this->bottom_, this->top_),
                 "must hold integer class ids, got 1.5 at index 2");
  }
  this->Fill(3, x, {0, 0, 2, 2});
  {
    LayerParameter per_class = layer_param;
    per_class.mutable_margin_loss_param()->set_num_classes(2);
    MarginLossLayer<Dtype> layer(per_class);
    layer.SetUp(this->bottom_, this->top_);
    EXPECT_DEATH(layer.Forward(this->bottom_, this->top_),
                 "in \\[0, num_classes = 2\\), got 2 at index 2");
  }
  {
    MarginLossLayer<Dtype> layer(layer_param);
    layer.SetUp(this->bottom_, this->top_);
    layer.Forward(this->bottom_, this->top_);
    EXPECT_DEATH(layer.Backward(this->top_, vector<bool>{true, true},
                                this->bottom_),
                 "cannot backpropagate to label");
  }
}

}  // namespace caffe
