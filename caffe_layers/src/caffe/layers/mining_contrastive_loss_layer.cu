#include <vector>

#include "caffe/layers/mining_contrastive_loss_layer.hpp"
#include "caffe_mining/contrastive_mining.hpp"

namespace caffe {

template <typename Dtype>
void MiningContrastiveLossLayer<Dtype>::Forward_gpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  const Dtype* sim = bottom[2]->gpu_data();
  // The label check runs on the device, queued with the forward (which reads any non-zero label as
  // "similar", so it is safe to run first); its one-int answer is read once everything is queued.
  const caffe_mining::CudaContext context{};  // the default stream; no GEMMs
  int* first_invalid_gpu = static_cast<int*>(first_invalid_label_->mutable_gpu_data());
  caffe_mining::find_invalid_label_gpu(context, sim, num, first_invalid_gpu);
  caffe_mining::contrastive_forward_gpu(context, num, dim,
      bottom[0]->gpu_data(), bottom[1]->gpu_data(), sim, options_, Pairs(true),
      gpu_workspace_->mutable_gpu_data(), top[0]->mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
  CheckLabels(*bottom[2], *static_cast<const int*>(first_invalid_label_->cpu_data()));
}

template <typename Dtype>
void MiningContrastiveLossLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down.size() > 2 && propagate_down[2]) {
    LOG(FATAL) << this->type() << " layer cannot backpropagate to the sim labels (bottom[2]).";
  }
  Dtype* grad_a = propagate_down[0] ? bottom[0]->mutable_gpu_diff() : NULL;
  Dtype* grad_b = propagate_down[1] ? bottom[1]->mutable_gpu_diff() : NULL;
  if (!grad_a && !grad_b) return;
  caffe_mining::contrastive_backward_gpu(caffe_mining::CudaContext(),
      bottom[0]->shape(0), bottom[0]->count(1), bottom[2]->gpu_data(),
      options_, Pairs(true), top[0]->cpu_diff()[0],
      gpu_workspace_->mutable_gpu_data(), grad_a, grad_b);
  CUDA_POST_KERNEL_CHECK;
}

INSTANTIATE_LAYER_GPU_FUNCS(MiningContrastiveLossLayer);

}  // namespace caffe
