#include <vector>

#include "caffe/layers/margin_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
void MarginLossLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  const int capacity = Prepare(bottom);  // labels read on the host
  // The default stream, as Caffe's own kernels (no GEMM: no cuBLAS handle).
  caffe_mining::margin_forward_gpu(caffe_mining::CudaContext(), num, dim, bottom[0]->gpu_data(),
      bottom[1]->gpu_data(), this->blobs_[0]->gpu_data(), options_, passes_++,
      capacity, Mining(true), workspace_.mutable_gpu_data(),
      top[0]->mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
  WriteTriplets(top, true);  // T comes back to the host to shape top[1]
}

template <typename Dtype>
void MarginLossLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[1]) {
    LOG(FATAL) << this->type()
               << " Layer cannot backpropagate to label inputs.";
  }
  const bool to_beta = this->param_propagate_down_[0];
  if (!propagate_down[0] && !to_beta) return;
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  caffe_mining::margin_backward_gpu(caffe_mining::CudaContext(), num, dim, bottom[0]->gpu_data(),
      bottom[1]->gpu_data(), this->blobs_[0]->gpu_data(), options_,
      Mining(true), top[0]->cpu_diff()[0], workspace_.mutable_gpu_data(),
      propagate_down[0] ? bottom[0]->mutable_gpu_diff() : NULL,
      to_beta ? beta_diff_.mutable_gpu_data() : NULL);
  CUDA_POST_KERNEL_CHECK;
  if (to_beta) {  // parameter gradients accumulate (iter_size)
    caffe_gpu_axpy(beta_diff_.count(), Dtype(1), beta_diff_.gpu_data(),
                   this->blobs_[0]->mutable_gpu_diff());
  }
}

INSTANTIATE_LAYER_GPU_FUNCS(MarginLossLayer);

}  // namespace caffe
