// TripletLoss's CPU core called directly with buffers allocated once (as the Caffe layer keeps them in blobs), for
// the benchmark's triplet suite (benchmarks/triplet_suite.py). A C interface loaded with ctypes.
#include <cstddef>
#include <vector>

#include "caffe_mining/triplet.hpp"

namespace {

// Everything triplet_forward_cpu / triplet_backward_cpu need besides the inputs and the gradient.
struct TripletBuffers {
  int n;
  caffe_mining::TripletOptions options;
  std::vector<float> dist, weight, row_loss, scratch;
  std::vector<int> positive, negative, pair_negative;
  std::vector<long long> row_terms, terms;

  TripletBuffers(int rows, const caffe_mining::TripletOptions& mode)
      : n(rows), options(mode), dist(static_cast<std::size_t>(rows) * rows), weight(dist.size()), row_loss(rows),
        scratch(caffe_mining::triplet_workspace_bytes<float>(rows, mode, caffe_mining::Device::kCpu) / sizeof(float)),
        positive(rows), negative(rows),
        pair_negative(mode.mining == caffe_mining::TripletMiner::kSemiHard ? dist.size() : 0), row_terms(rows),
        terms(1) {}

  caffe_mining::TripletMining<float> mining() {
    return {dist.data(), weight.data(), positive.data(), negative.data(),
            pair_negative.empty() ? nullptr : pair_negative.data(), row_loss.data(), row_terms.data(),
            terms.data()};
  }
};

}  // namespace

extern "C" {

/// Buffers for TripletLoss at batch n: mining (the core's TripletMiner: 0 BATCH_HARD, 1 BATCH_ALL, 2 SEMI_HARD),
/// soft_margin (0/1), margin.
void* bench_triplet_create(int n, int mining, int soft_margin, float margin) {
  caffe_mining::TripletOptions options;
  options.mining = static_cast<caffe_mining::TripletMiner>(mining);
  options.soft_margin = soft_margin != 0;
  options.margin = margin;
  return new TripletBuffers(n, options);
}
void bench_triplet_destroy(void* buffers) { delete static_cast<TripletBuffers*>(buffers); }

/// TripletLoss as created, forward then backward (loss weight 1); returns the loss.
float bench_triplet_forward_backward(void* handle, int dim, const float* embedding, const float* labels,
                                     float* embedding_diff) {
  TripletBuffers& buffers = *static_cast<TripletBuffers*>(handle);
  const caffe_mining::TripletMining<float> mining = buffers.mining();
  float loss = 0.0f;
  caffe_mining::triplet_forward_cpu<float>(buffers.n, dim, embedding, labels, buffers.options, mining,
                                           buffers.scratch.data(), &loss);
  caffe_mining::triplet_backward_cpu<float>(buffers.n, dim, embedding, buffers.options, mining, 1.0f,
                                            buffers.scratch.data(), embedding_diff);
  return loss;
}

}  // extern "C"
