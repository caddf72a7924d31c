#include <algorithm>
#include <string>
#include <vector>

#include "caffe/layers/mining_contrastive_loss_layer.hpp"
#include "caffe_mining/contrastive_mining.hpp"

namespace caffe {

template <typename Dtype>
void MiningContrastiveLossLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  LossLayer<Dtype>::LayerSetUp(bottom, top);
  const ContrastiveLossParameter& param = this->layer_param_.contrastive_loss_param();
  options_.margin = param.margin();
  options_.legacy_version = param.legacy_version();
  options_.mining_ratio = param.mining_ratio();
  const std::string problem = options_.validate<Dtype>();
  CHECK(problem.empty()) << this->type() << " layer " << this->layer_param_.name()
      << ": contrastive_loss_param." << problem;
  first_invalid_label_.reset(new SyncedMemory(sizeof(int)));
}

template <typename Dtype>
void MiningContrastiveLossLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  CHECK(bottom[0]->shape() == bottom[1]->shape()) << this->type()
      << ": feat (bottom[0]) and feat_p (bottom[1]) must have the same shape, got "
      << bottom[0]->shape_string() << " and " << bottom[1]->shape_string();
  CHECK(bottom[0]->num_axes() >= 2 && bottom[0]->count(2) == 1) << this->type()
      << ": feat (bottom[0]) must be N x D or N x D x 1 x 1, got " << bottom[0]->shape_string();
  const int num = bottom[0]->shape(0);
  CHECK(num >= 1 && bottom[0]->count(1) >= 1) << this->type() << " layer "
      << this->layer_param_.name() << ": feat (bottom[0]) needs N >= 1 pairs of D >= 1 values, got "
      << bottom[0]->shape_string();
  CHECK_EQ(bottom[2]->count(), num) << this->type()
      << ": sim (bottom[2]) must hold one 0/1 label per pair, N = " << num
      << " values (e.g. N x 1 x 1 x 1), got shape " << bottom[2]->shape_string();
  LossLayer<Dtype>::Reshape(bottom, top);

  diff_.ReshapeLike(*bottom[0]);
  const vector<int> pair_shape(1, num);
  dist_sq_.Reshape(pair_shape);
  cost_.Reshape(pair_shape);
  picked_.Reshape(pair_shape);
  num_picked_ = caffe_mining::num_picked_pairs(num, options_.mining_ratio);
  if (num_picked_ == 0 && !warned_no_pairs_) {
    LOG(WARNING) << this->type() << " layer " << this->layer_param_.name()
        << ": mining_ratio " << options_.mining_ratio << " > batch size " << num
        << ", so no pair is picked: the loss and its gradients are 0.";
    warned_no_pairs_ = true;
  }
  // Workspaces only grow, so a batch size that goes up and down does not reallocate each time.
  const size_t cpu_bytes = std::max<size_t>(
      caffe_mining::contrastive_workspace_bytes(num, options_, caffe_mining::Device::kCpu), 1);
  if (!cpu_workspace_ || cpu_workspace_->size() < cpu_bytes) {
    cpu_workspace_.reset(new SyncedMemory(cpu_bytes));
  }
#ifndef CPU_ONLY
  const size_t gpu_bytes = std::max<size_t>(
      caffe_mining::contrastive_workspace_bytes(num, options_, caffe_mining::Device::kGpu), 1);
  if (!gpu_workspace_ || gpu_workspace_->size() < gpu_bytes) {
    gpu_workspace_.reset(new SyncedMemory(gpu_bytes));
  }
#endif
}

template <typename Dtype>
caffe_mining::ContrastivePairs<Dtype> MiningContrastiveLossLayer<Dtype>::Pairs(
    bool on_gpu) {
  caffe_mining::ContrastivePairs<Dtype> pairs;
  pairs.diff = on_gpu ? diff_.mutable_gpu_data() : diff_.mutable_cpu_data();
  pairs.dist_sq =
      on_gpu ? dist_sq_.mutable_gpu_data() : dist_sq_.mutable_cpu_data();
  pairs.cost = on_gpu ? cost_.mutable_gpu_data() : cost_.mutable_cpu_data();
  pairs.picked =
      on_gpu ? picked_.mutable_gpu_data() : picked_.mutable_cpu_data();
  return pairs;
}

template <typename Dtype>
void MiningContrastiveLossLayer<Dtype>::CheckLabels(const Blob<Dtype>& sim,
                                                    int first_invalid) const {
  if (first_invalid < 0 || first_invalid >= sim.count()) return;
  LOG(FATAL) << this->type() << " layer " << this->layer_param_.name()
      << ": sim (bottom[2]) must be 0 (dissimilar) or 1 (similar), got "
      << sim.cpu_data()[first_invalid] << " at index " << first_invalid;
}

template <typename Dtype>
void MiningContrastiveLossLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  const Dtype* sim = bottom[2]->cpu_data();
  CheckLabels(*bottom[2], caffe_mining::find_invalid_label_cpu(sim, num));
  caffe_mining::contrastive_forward_cpu(num, dim, bottom[0]->cpu_data(),
      bottom[1]->cpu_data(), sim, options_, Pairs(false),
      cpu_workspace_->mutable_cpu_data(), top[0]->mutable_cpu_data());
}

template <typename Dtype>
void MiningContrastiveLossLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down.size() > 2 && propagate_down[2]) {
    LOG(FATAL) << this->type() << " layer cannot backpropagate to the sim labels (bottom[2]).";
  }
  Dtype* grad_a = propagate_down[0] ? bottom[0]->mutable_cpu_diff() : NULL;
  Dtype* grad_b = propagate_down[1] ? bottom[1]->mutable_cpu_diff() : NULL;
  if (!grad_a && !grad_b) return;
  caffe_mining::contrastive_backward_cpu(bottom[0]->shape(0),
      bottom[0]->count(1), bottom[2]->cpu_data(), options_, Pairs(false),
      top[0]->cpu_diff()[0], cpu_workspace_->mutable_cpu_data(), grad_a,
      grad_b);
}

#ifdef CPU_ONLY
STUB_GPU(MiningContrastiveLossLayer);
#endif

INSTANTIATE_CLASS(MiningContrastiveLossLayer);
REGISTER_LAYER_CLASS(MiningContrastiveLoss);

}  // namespace caffe
