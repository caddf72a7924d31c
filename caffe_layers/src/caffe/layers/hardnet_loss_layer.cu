#include <vector>

#include "caffe/layers/hardnet_loss_layer.hpp"
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

// top[1] row i = (chosen negative j or -1, 1 if swapped).
template <typename Dtype>
__global__ void HardNetChoiceForward(const int num, const int* neg_index,
    const int* neg_swapped, Dtype* choice) {
  CUDA_KERNEL_LOOP(i, num) {
    choice[2 * i] = Dtype(neg_index[i]);
    choice[2 * i + 1] = Dtype(neg_swapped[i]);
  }
}

template <typename Dtype>
void HardNetLossLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  if (bottom.size() > 2) CheckLabels(*bottom[2]);  // N values read on the host
  const bool random = options_.batch_reduce ==
      caffe_mining::HardNetBatchReduce::kRandom;
  // Drawn on the host (n values copied over) so CPU and GPU pick alike.
  if (random) DrawUniforms(num);
  caffe_mining::hardnet_forward_gpu(CoreContext(), num, dim,
      bottom[0]->gpu_data(), bottom[1]->gpu_data(),
      bottom.size() > 2 ? bottom[2]->gpu_data() : NULL,
      random ? uniforms_.gpu_data() : NULL, options_, Mining(true),
      scratch_.mutable_gpu_data(), top[0]->mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
  if (top.size() > 1) {
    // NOLINT_NEXT_LINE(whitespace/operators)
    HardNetChoiceForward<Dtype><<<CAFFE_GET_BLOCKS(num),
        CAFFE_CUDA_NUM_THREADS>>>(num, neg_index_.gpu_data(),
        neg_swapped_.gpu_data(), top[1]->mutable_gpu_data());
    CUDA_POST_KERNEL_CHECK;
  }
}

template <typename Dtype>
void HardNetLossLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (bottom.size() > 2 && propagate_down[2]) {
    LOG(FATAL) << this->type()
               << " Layer cannot backpropagate to label inputs.";
  }
  if (!propagate_down[0] && !propagate_down[1]) return;
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  caffe_mining::hardnet_backward_gpu(CoreContext(), num, dim,
      bottom[0]->gpu_data(), bottom[1]->gpu_data(),
      bottom.size() > 2 ? bottom[2]->gpu_data() : NULL, options_, Mining(true),
      top[0]->cpu_diff()[0], scratch_.mutable_gpu_data(),
      propagate_down[0] ? bottom[0]->mutable_gpu_diff() : NULL,
      propagate_down[1] ? bottom[1]->mutable_gpu_diff() : NULL);
  CUDA_POST_KERNEL_CHECK;
}

INSTANTIATE_LAYER_GPU_FUNCS(HardNetLossLayer);

}  // namespace caffe
