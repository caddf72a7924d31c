#include <cmath>
#include <string>
#include <vector>

#include "caffe/filler.hpp"
#include "caffe/layers/margin_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
void MarginLossLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  // A second top is for inspection: give it loss weight 0 unless the user
  // set the weights (Caffe wants one per top or none).
  if (this->layer_param_.loss_weight_size() == 0) {
    this->layer_param_.add_loss_weight(Dtype(1));
    if (top.size() > 1) this->layer_param_.add_loss_weight(Dtype(0));
  }
  LossLayer<Dtype>::LayerSetUp(bottom, top);

  const MarginLossParameter& param = this->layer_param_.margin_loss_param();
  options_.margin = param.margin();
  options_.beta_init = param.beta_init();
  options_.nu = param.nu();
  options_.num_classes = param.num_classes();
  options_.negatives_per_positive = param.negatives_per_positive();
  options_.sampler =
      static_cast<caffe_mining::NegativeSampler>(param.sampler());
  options_.cutoff = param.cutoff();
  options_.nonzero_loss_cutoff = param.nonzero_loss_cutoff();
  options_.eps = param.eps();
  options_.seed = param.seed();
  const std::string problem = options_.validate<Dtype>();
  CHECK(problem.empty()) << "MarginLoss layer " << this->layer_param_.name()
      << ": margin_loss_param." << problem;

  const int betas = options_.num_classes > 0 ? options_.num_classes : 1;
  if (this->blobs_.size() > 0) {
    LOG(INFO) << "MarginLoss: skipping beta initialization (already set)";
    CHECK_EQ(this->blobs_.size(), 1) << "MarginLoss has one parameter blob "
        "(beta), got " << this->blobs_.size();
    CHECK_EQ(this->blobs_[0]->count(), betas) << "MarginLoss: beta must hold "
        "max(1, num_classes) = " << betas << " values, got "
        << this->blobs_[0]->shape_string();
  } else {
    this->blobs_.resize(1);
    this->blobs_[0].reset(new Blob<Dtype>(vector<int>(1, betas)));
    caffe_set(betas, static_cast<Dtype>(options_.beta_init),
              this->blobs_[0]->mutable_cpu_data());
  }
  this->param_propagate_down_.resize(this->blobs_.size(), true);
  passes_ = 0;
}

template <typename Dtype>
void MarginLossLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  CHECK_GE(bottom[0]->num_axes(), 2) << "MarginLoss: embedding must be N x D "
      "(or N x D x 1 x 1), got " << bottom[0]->shape_string();
  CHECK_EQ(bottom[0]->count(2), 1) << "MarginLoss: embedding must be N x D "
      "(or N x D x 1 x 1), got " << bottom[0]->shape_string();
  const int num = bottom[0]->shape(0);
  CHECK_GE(num, 2) << "MarginLoss needs N >= 2 samples, got embedding "
      << bottom[0]->shape_string();
  CHECK_GE(bottom[0]->shape(1), 1) << "MarginLoss: embeddings must have "
      "D >= 1 values, got " << bottom[0]->shape_string();
  CHECK_EQ(bottom[1]->count(), num) << "MarginLoss: label must hold N = "
      << num << " class ids (one per row of embedding), got "
      << bottom[1]->shape_string();
  // Caffe's LossLayer::Reshape checks bottom[1]'s first axis too (a label of
  // count N in another shape is fine here): the scalar top alone.
  top[0]->Reshape(vector<int>());
  if (top.size() > 1) top[1]->Reshape(vector<int>{0, 3});  // set by Forward
  const vector<int> rows(1, num);
  anchor_count_.Reshape(rows);
  anchor_offset_.Reshape(rows);
  counts_.Reshape(vector<int>(1, 2));
  beta_diff_.Reshape(this->blobs_[0]->shape());
  const size_t bytes = caffe_mining::margin_workspace_bytes<Dtype>(num,
      options_, caffe_mining::Device::kGpu);  // covers the CPU's too
  workspace_.Reshape(vector<int>(1, static_cast<int>(bytes / sizeof(double) + 1)));
}

template <typename Dtype>
int MarginLossLayer<Dtype>::Prepare(const vector<Blob<Dtype>*>& bottom) {
  const int num = bottom[0]->shape(0);
  const Dtype* labels = bottom[1]->cpu_data();
  const int invalid = caffe_mining::margin_find_invalid_label(labels, num,
      options_.num_classes);
  if (options_.num_classes > 0) {
    CHECK_LT(invalid, 0) << "MarginLoss layer " << this->layer_param_.name()
        << ": label (bottom[1]) must hold integer class ids in [0, "
        "num_classes = " << options_.num_classes << "), got "
        << labels[invalid] << " at index " << invalid;
  } else {
    CHECK_LT(invalid, 0) << "MarginLoss layer " << this->layer_param_.name()
        << ": label (bottom[1]) must hold integer class ids, got "
        << labels[invalid] << " at index " << invalid;
  }
  const long long capacity = caffe_mining::margin_triplet_capacity(labels, num,
      options_);
  CHECK_GE(capacity, 0) << "MarginLoss: the batch has more (anchor, positive, "
      "draw) triplets than a blob can hold; lower negatives_per_positive";
  const int slots = capacity > 0 ? static_cast<int>(capacity) : 1;
  triplets_.Reshape(vector<int>{slots, 3});
  pos_dist_.Reshape(vector<int>(1, slots));
  neg_dist_.Reshape(vector<int>(1, slots));
  if (!checked_norm_) {  // the sampler's density is the unit sphere's: said once
    checked_norm_ = true;  // (the first batch only: no copy from the GPU after)
    const int dim = bottom[0]->count(1);
    const Dtype* x = bottom[0]->cpu_data();
    for (int i = 0; i < num; ++i) {
      const Dtype norm = std::sqrt(caffe_cpu_dot(dim, x + i * dim, x + i * dim));
      if (std::isfinite(norm) && std::fabs(norm - Dtype(1)) > Dtype(1e-3)) {
        LOG(WARNING) << "MarginLoss layer " << this->layer_param_.name()
            << " expects L2-normalised embeddings (put a normalisation before "
            "it): row " << i << " of the first batch has norm " << norm;
        break;
      }
    }
  }
  return static_cast<int>(capacity);
}

namespace {
template <typename T>
T* MutableData(Blob<T>* blob, bool on_gpu) {
  return on_gpu ? blob->mutable_gpu_data() : blob->mutable_cpu_data();
}
}  // namespace

template <typename Dtype>
caffe_mining::MarginMining<Dtype> MarginLossLayer<Dtype>::Mining(bool on_gpu) {
  caffe_mining::MarginMining<Dtype> mining;
  mining.triplets = MutableData(&triplets_, on_gpu);
  mining.pos_dist = MutableData(&pos_dist_, on_gpu);
  mining.neg_dist = MutableData(&neg_dist_, on_gpu);
  mining.anchor_count = MutableData(&anchor_count_, on_gpu);
  mining.anchor_offset = MutableData(&anchor_offset_, on_gpu);
  mining.counts = MutableData(&counts_, on_gpu);
  return mining;
}

template <typename Dtype>
void MarginLossLayer<Dtype>::WriteTriplets(const vector<Blob<Dtype>*>& top,
    bool on_gpu) {
  if (top.size() < 2) return;
  (void)on_gpu;  // the counts and triplets come to the host either way
  const int count = counts_.cpu_data()[0] > 0 ? counts_.cpu_data()[0] : 0;
  // Shaped 1 x 3 first, so that a pass with no triplet leaves an allocated
  // 0 x 3 blob (Caffe's and pycaffe's data accessors fail on one never
  // allocated).
  top[1]->Reshape(vector<int>{count > 0 ? count : 1, 3});
  top[1]->Reshape(vector<int>{count, 3});
  if (count == 0) return;
  const int* triplets = triplets_.cpu_data();
  Dtype* out = top[1]->mutable_cpu_data();
  for (int k = 0; k < 3 * count; ++k) out[k] = Dtype(triplets[k]);
}

template <typename Dtype>
void MarginLossLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  const int capacity = Prepare(bottom);
  caffe_mining::margin_forward_cpu(num, dim, bottom[0]->cpu_data(),
      bottom[1]->cpu_data(), this->blobs_[0]->cpu_data(), options_, passes_++,
      capacity, Mining(false), workspace_.mutable_cpu_data(),
      top[0]->mutable_cpu_data());
  WriteTriplets(top, false);
}

template <typename Dtype>
void MarginLossLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[1]) {
    LOG(FATAL) << this->type()
               << " Layer cannot backpropagate to label inputs.";
  }
  const bool to_beta = this->param_propagate_down_[0];
  if (!propagate_down[0] && !to_beta) return;
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  caffe_mining::margin_backward_cpu(num, dim, bottom[0]->cpu_data(),
      bottom[1]->cpu_data(), this->blobs_[0]->cpu_data(), options_,
      Mining(false), top[0]->cpu_diff()[0], workspace_.mutable_cpu_data(),
      propagate_down[0] ? bottom[0]->mutable_cpu_diff() : NULL,
      to_beta ? beta_diff_.mutable_cpu_data() : NULL);
  if (to_beta) {  // parameter gradients accumulate (iter_size)
    caffe_axpy(beta_diff_.count(), Dtype(1), beta_diff_.cpu_data(),
               this->blobs_[0]->mutable_cpu_diff());
  }
}

#ifdef CPU_ONLY
STUB_GPU(MarginLossLayer);
#endif

INSTANTIATE_CLASS(MarginLossLayer);
REGISTER_LAYER_CLASS(MarginLoss);

}  // namespace caffe
