#include <string>
#include <vector>

#include "caffe/layers/hardnet_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe_mining/miners/label_masks.hpp"

namespace caffe {

template <typename Dtype>
void HardNetLossLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  // A second top is for inspection: give it loss weight 0 unless the user
  // set the weights (Caffe wants one per top or none).
  if (this->layer_param_.loss_weight_size() == 0) {
    this->layer_param_.add_loss_weight(Dtype(1));
    if (top.size() > 1) this->layer_param_.add_loss_weight(Dtype(0));
  }
  LossLayer<Dtype>::LayerSetUp(bottom, top);

  const HardNetLossParameter& param = this->layer_param_.hardnet_loss_param();
  options_.margin = param.margin();
  options_.anchor_swap = param.anchor_swap();
  options_.batch_reduce =
      static_cast<caffe_mining::HardNetBatchReduce>(param.batch_reduce());
  options_.loss_type =
      static_cast<caffe_mining::HardNetLossType>(param.loss_type());
  options_.eps = param.eps();
  options_.duplicate_threshold = param.duplicate_threshold();
  const std::string problem = options_.validate<Dtype>();
  CHECK(problem.empty()) << "HardNetLoss layer " << this->layer_param_.name()
      << ": hardnet_loss_param." << problem;
  random_engine_.seed(param.has_seed() ? param.seed() : caffe_rng_rand());
}

template <typename Dtype>
void HardNetLossLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  CHECK_GE(bottom[0]->num_axes(), 2) << "HardNetLoss: anchor must be N x D "
      "(or N x D x 1 x 1), got " << bottom[0]->shape_string();
  CHECK_EQ(bottom[0]->count(2), 1) << "HardNetLoss: anchor must be N x D "
      "(or N x D x 1 x 1), got " << bottom[0]->shape_string();
  CHECK(bottom[0]->shape() == bottom[1]->shape()) << "HardNetLoss: positive "
      "must have the anchor's shape " << bottom[0]->shape_string() << ", got "
      << bottom[1]->shape_string();
  const int num = bottom[0]->shape(0);
  CHECK_GE(num, 2) << "HardNetLoss needs N >= 2 pairs to mine negatives, got "
      "anchor " << bottom[0]->shape_string();
  CHECK_GE(bottom[0]->shape(1), 1) << "HardNetLoss: descriptors must have "
      "D >= 1 values, got " << bottom[0]->shape_string();
  const int max_rows = caffe_mining::hardnet_max_rows(options_);
  CHECK_LE(num, max_rows) << "HardNetLoss: N = " << num << " pairs need an "
      "N x N blob of more than INT_MAX elements; this batch_reduce supports "
      "at most N = " << max_rows << " (MIN and RANDOM 46340, AVERAGE 46339)";
  if (bottom.size() > 2) {
    CHECK_EQ(bottom[2]->count(), num) << "HardNetLoss: label must hold N = "
        << num << " class ids (one per pair), got "
        << bottom[2]->shape_string();
  }
  LossLayer<Dtype>::Reshape(bottom, top);
  if (top.size() > 1) {
    top[1]->Reshape(vector<int>{num, 2});
  }
  dist_.Reshape(vector<int>{num, num});
  const vector<int> rows(1, num);
  pos_dist_.Reshape(rows);
  neg_dist_.Reshape(rows);
  row_loss_.Reshape(rows);
  dloss_dpos_.Reshape(rows);
  dloss_dneg_.Reshape(rows);
  uniforms_.Reshape(rows);
  neg_index_.Reshape(rows);
  neg_swapped_.Reshape(rows);
  neg_count_.Reshape(rows);
  valid_rows_.Reshape(vector<int>(1, 1));
  // The core's workspace, in Dtype elements (Caffe's device: the same bytes on the CPU and the GPU).
  scratch_.Reshape(vector<int>(1, static_cast<int>(
      caffe_mining::hardnet_workspace_bytes<Dtype>(num, options_, caffe_mining::Device::kCpu) / sizeof(Dtype))));
}

namespace {
// One side of a blob, for the core's plain pointers.
template <typename T>
T* MutableData(Blob<T>* blob, bool on_gpu) {
  return on_gpu ? blob->mutable_gpu_data() : blob->mutable_cpu_data();
}
}  // namespace

template <typename Dtype>
caffe_mining::HardNetMining<Dtype> HardNetLossLayer<Dtype>::Mining(bool on_gpu) {
  caffe_mining::HardNetMining<Dtype> mining;
  mining.dist = MutableData(&dist_, on_gpu);
  mining.pos_dist = MutableData(&pos_dist_, on_gpu);
  mining.neg_dist = MutableData(&neg_dist_, on_gpu);
  mining.neg_index = MutableData(&neg_index_, on_gpu);
  mining.neg_swapped = MutableData(&neg_swapped_, on_gpu);
  mining.neg_count = MutableData(&neg_count_, on_gpu);
  mining.row_loss = MutableData(&row_loss_, on_gpu);
  mining.dloss_dpos = MutableData(&dloss_dpos_, on_gpu);
  mining.dloss_dneg = MutableData(&dloss_dneg_, on_gpu);
  mining.valid_rows = MutableData(&valid_rows_, on_gpu);
  return mining;
}

template <typename Dtype>
void HardNetLossLayer<Dtype>::CheckLabels(const Blob<Dtype>& label) const {
  const Dtype* ids = label.cpu_data();
  const int invalid = caffe_mining::find_non_finite_label(ids, label.count());
  CHECK_LT(invalid, 0) << "HardNetLoss layer " << this->layer_param_.name()
      << ": label (bottom[2]) must hold finite class ids, got " << ids[invalid]
      << " at index " << invalid;
}

template <typename Dtype>
void HardNetLossLayer<Dtype>::DrawUniforms(int num) {
  // 24 random bits: exact in float and double, strictly below 1.
  Dtype* uniforms = uniforms_.mutable_cpu_data();
  for (int i = 0; i < num; ++i) {
    uniforms[i] = Dtype(random_engine_() >> 8) / Dtype(16777216);
  }
}

template <typename Dtype>
void HardNetLossLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  if (bottom.size() > 2) CheckLabels(*bottom[2]);
  const bool random = options_.batch_reduce ==
      caffe_mining::HardNetBatchReduce::kRandom;
  if (random) DrawUniforms(num);
  caffe_mining::hardnet_forward_cpu(num, dim, bottom[0]->cpu_data(),
      bottom[1]->cpu_data(), bottom.size() > 2 ? bottom[2]->cpu_data() : NULL,
      random ? uniforms_.cpu_data() : NULL, options_, Mining(false),
      scratch_.mutable_cpu_data(), top[0]->mutable_cpu_data());
  if (top.size() > 1) {
    const int* neg_index = neg_index_.cpu_data();
    const int* neg_swapped = neg_swapped_.cpu_data();
    Dtype* choice = top[1]->mutable_cpu_data();
    for (int i = 0; i < num; ++i) {
      choice[2 * i] = Dtype(neg_index[i]);
      choice[2 * i + 1] = Dtype(neg_swapped[i]);
    }
  }
}

template <typename Dtype>
void HardNetLossLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (bottom.size() > 2 && propagate_down[2]) {
    LOG(FATAL) << this->type()
               << " Layer cannot backpropagate to label inputs.";
  }
  if (!propagate_down[0] && !propagate_down[1]) return;
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  caffe_mining::hardnet_backward_cpu(num, dim, bottom[0]->cpu_data(),
      bottom[1]->cpu_data(), bottom.size() > 2 ? bottom[2]->cpu_data() : NULL,
      options_, Mining(false), top[0]->cpu_diff()[0],
      scratch_.mutable_cpu_data(),
      propagate_down[0] ? bottom[0]->mutable_cpu_diff() : NULL,
      propagate_down[1] ? bottom[1]->mutable_cpu_diff() : NULL);
}

#ifdef CPU_ONLY
STUB_GPU(HardNetLossLayer);
#endif

INSTANTIATE_CLASS(HardNetLossLayer);
REGISTER_LAYER_CLASS(HardNetLoss);

}  // namespace caffe
