#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "caffe/layers/triplet_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
void TripletLossLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  // A second top is for inspection: give it loss weight 0 unless the user
  // set the weights (Caffe wants one per top or none).
  if (this->layer_param_.loss_weight_size() == 0) {
    this->layer_param_.add_loss_weight(Dtype(1));
    if (top.size() > 1) this->layer_param_.add_loss_weight(Dtype(0));
  }
  LossLayer<Dtype>::LayerSetUp(bottom, top);

  const TripletLossParameter& param = this->layer_param_.triplet_loss_param();
  options_.margin = param.margin();
  options_.soft_margin = param.soft_margin();
  options_.squared = param.squared();
  options_.mining = static_cast<caffe_mining::TripletMiner>(param.mining());
  options_.eps = param.eps();
  const std::string problem = options_.validate<Dtype>();
  CHECK(problem.empty()) << "TripletLoss layer " << this->layer_param_.name()
      << ": triplet_loss_param." << problem;
  row_terms_.reset(new SyncedMemory(sizeof(long long)));
  terms_.reset(new SyncedMemory(sizeof(long long)));
}

template <typename Dtype>
void TripletLossLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  CHECK_GE(bottom[0]->num_axes(), 2) << "TripletLoss: embedding must be N x D "
      "(or N x D x 1 x 1), got " << bottom[0]->shape_string();
  CHECK_EQ(bottom[0]->count(2), 1) << "TripletLoss: embedding must be N x D "
      "(or N x D x 1 x 1), got " << bottom[0]->shape_string();
  const int num = bottom[0]->shape(0);
  CHECK_GE(num, 1) << "TripletLoss needs N >= 1 rows, got embedding "
      << bottom[0]->shape_string();
  CHECK_GE(bottom[0]->shape(1), 1) << "TripletLoss: embeddings must have "
      "D >= 1 values, got " << bottom[0]->shape_string();
  const int max_rows = caffe_mining::triplet_max_rows();
  CHECK_LE(num, max_rows) << "TripletLoss: N = " << num << " rows need an "
      "N x N blob and a scratch of more than INT_MAX elements; at most N = "
      << max_rows;
  CHECK_EQ(bottom[1]->count(), num) << "TripletLoss: label must hold N = "
      << num << " class ids (one per row), got " << bottom[1]->shape_string();
  LossLayer<Dtype>::Reshape(bottom, top);
  const bool hard = options_.mining == caffe_mining::TripletMiner::kBatchHard;
  const bool semi = options_.mining == caffe_mining::TripletMiner::kSemiHard;
  if (top.size() > 1) {
    if (hard) {
      top[1]->Reshape(vector<int>{num, 3});
    } else if (semi) {
      // One row per ordered positive pair: sum over classes of c (c - 1).
      const Dtype* ids = bottom[1]->cpu_data();
      vector<Dtype> sorted(ids, ids + num);
      std::sort(sorted.begin(), sorted.end());
      long long pairs = 0;
      for (int start = 0, end = 0; start < num; start = end) {
        while (end < num && sorted[end] == sorted[start]) ++end;
        pairs += static_cast<long long>(end - start) * (end - start - 1);
      }
      top[1]->Reshape(vector<int>{static_cast<int>(pairs), 3});
    } else {
      top[1]->Reshape(vector<int>{1, 1});
    }
  }
  dist_.Reshape(vector<int>{num, num});
  weight_.Reshape(vector<int>{num, num});
  row_loss_.Reshape(vector<int>(1, num));
  positive_.Reshape(vector<int>(1, hard ? num : 1));
  negative_.Reshape(vector<int>(1, hard ? num : 1));
  pair_negative_.Reshape(semi ? vector<int>{num, num} : vector<int>(1, 1));
  if (row_terms_->size() != num * sizeof(long long)) {
    row_terms_.reset(new SyncedMemory(num * sizeof(long long)));
  }
  // The core's workspace, in Dtype elements (Caffe's device: the same bytes on the CPU and the GPU).
  scratch_.Reshape(vector<int>(1, static_cast<int>(
      caffe_mining::triplet_workspace_bytes<Dtype>(num, options_, caffe_mining::Device::kCpu) / sizeof(Dtype))));
}

namespace {
// One side of a blob, for the core's plain pointers.
template <typename T>
T* MutableData(Blob<T>* blob, bool on_gpu) {
  return on_gpu ? blob->mutable_gpu_data() : blob->mutable_cpu_data();
}
long long* MutableData(SyncedMemory* memory, bool on_gpu) {
  return static_cast<long long*>(on_gpu ? memory->mutable_gpu_data()
                                        : memory->mutable_cpu_data());
}
}  // namespace

template <typename Dtype>
caffe_mining::TripletMining<Dtype> TripletLossLayer<Dtype>::Mining(
    bool on_gpu) {
  const bool hard = options_.mining == caffe_mining::TripletMiner::kBatchHard;
  const bool semi = options_.mining == caffe_mining::TripletMiner::kSemiHard;
  caffe_mining::TripletMining<Dtype> mining;
  mining.dist = MutableData(&dist_, on_gpu);
  mining.weight = MutableData(&weight_, on_gpu);
  mining.positive = hard ? MutableData(&positive_, on_gpu) : NULL;
  mining.negative = hard ? MutableData(&negative_, on_gpu) : NULL;
  mining.pair_negative = semi ? MutableData(&pair_negative_, on_gpu) : NULL;
  mining.row_loss = MutableData(&row_loss_, on_gpu);
  mining.row_terms = MutableData(row_terms_.get(), on_gpu);
  mining.terms = MutableData(terms_.get(), on_gpu);
  return mining;
}

template <typename Dtype>
void TripletLossLayer<Dtype>::CheckLabels(const Blob<Dtype>& label) const {
  const Dtype* ids = label.cpu_data();
  const int invalid =
      caffe_mining::triplet_find_invalid_label(ids, label.count());
  CHECK_LT(invalid, 0) << "TripletLoss layer " << this->layer_param_.name()
      << ": label (bottom[1]) must hold finite integer class ids, got "
      << ids[invalid] << " at index " << invalid;
}

template <typename Dtype>
void TripletLossLayer<Dtype>::WriteMining(const Dtype* labels,
    Blob<Dtype>* top) {
  Dtype* out = top->mutable_cpu_data();
  const int num = dist_.shape(0);
  if (options_.mining == caffe_mining::TripletMiner::kBatchHard) {
    const int* positive = positive_.cpu_data();
    const int* negative = negative_.cpu_data();
    for (int a = 0; a < num; ++a) {
      out[3 * a] = Dtype(a);
      out[3 * a + 1] = Dtype(positive[a]);
      out[3 * a + 2] = Dtype(negative[a]);
    }
  } else if (options_.mining == caffe_mining::TripletMiner::kSemiHard) {
    const int* pair_negative = pair_negative_.cpu_data();
    int row = 0;
    for (int a = 0; a < num; ++a) {
      for (int p = 0; p < num; ++p) {
        if (!caffe_mining::is_positive_of(labels, a, p)) continue;
        out[3 * row] = Dtype(a);
        out[3 * row + 1] = Dtype(p);
        out[3 * row + 2] = Dtype(pair_negative[a * num + p]);
        ++row;
      }
    }
  } else {
    out[0] = Dtype(*static_cast<const long long*>(terms_->cpu_data()));
  }
}

template <typename Dtype>
void TripletLossLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  CheckLabels(*bottom[1]);
  caffe_mining::triplet_forward_cpu(num, dim, bottom[0]->cpu_data(),
      bottom[1]->cpu_data(), options_, Mining(false),
      scratch_.mutable_cpu_data(), top[0]->mutable_cpu_data());
  if (top.size() > 1) {
    WriteMining(bottom[1]->cpu_data(), top[1]);
  }
}

template <typename Dtype>
void TripletLossLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[1]) {
    LOG(FATAL) << this->type()
               << " Layer cannot backpropagate to label inputs.";
  }
  if (!propagate_down[0]) return;
  const int num = bottom[0]->shape(0);
  const int dim = bottom[0]->count(1);
  caffe_mining::triplet_backward_cpu(num, dim, bottom[0]->cpu_data(),
      options_, Mining(false), top[0]->cpu_diff()[0],
      scratch_.mutable_cpu_data(), bottom[0]->mutable_cpu_diff());
}

#ifdef CPU_ONLY
STUB_GPU(TripletLossLayer);
#endif

INSTANTIATE_CLASS(TripletLossLayer);
REGISTER_LAYER_CLASS(TripletLoss);

}  // namespace caffe
