#include <vector>

#include "caffe/layers/triplet_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace {
// Caffe's default stream and cuBLAS handle, for the core's GPU calls.
caffe_mining::CudaContext CoreContext() {
  caffe_mining::CudaContext context;
  context.cublas = Caffe::cublas_handle();
  return context;
}
}  // namespace

template <typename Dtype>
void TripletLossLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  CheckLabels(*bottom[1]);  // N values read on the host
  caffe_mining::triplet_forward_gpu(CoreContext(), num, dim,
      bottom[0]->gpu_data(), bottom[1]->gpu_data(), options_, Mining(true),
      scratch_.mutable_gpu_data(), top[0]->mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
  // The mining top is for inspection: written on the host from the decisions.
  if (top.size() > 1) WriteMining(bottom[1]->cpu_data(), top[1]);
}

template <typename Dtype>
void TripletLossLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[1]) {
    LOG(FATAL) << this->type()
               << " Layer cannot backpropagate to label inputs.";
  }
  if (!propagate_down[0]) return;
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  caffe_mining::triplet_backward_gpu(CoreContext(), num, dim,
      bottom[0]->gpu_data(), options_, Mining(true), top[0]->cpu_diff()[0],
      scratch_.mutable_gpu_data(), bottom[0]->mutable_gpu_diff());
  CUDA_POST_KERNEL_CHECK;
}

INSTANTIATE_LAYER_GPU_FUNCS(TripletLossLayer);

}  // namespace caffe
