// The Caffe-free core called directly, with buffers allocated once (as the Caffe layers keep them in blobs), and
// the SGEMM floor on the same OpenBLAS the core links. A C interface, loaded by benchmarks/native.py with ctypes, so
// the Python-side cost of a call is the same few microseconds for every implementation timed this way.
#include <cblas.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "caffe_mining/contrastive_mining.hpp"
#include "caffe_mining/hardnet.hpp"

namespace {

// Everything hardnet_forward_cpu / hardnet_backward_cpu need besides the inputs and the gradients.
struct HardNetBuffers {
  int n;
  caffe_mining::HardNetOptions options;
  std::vector<float> dist, pos_dist, neg_dist, row_loss, dloss_dpos, dloss_dneg, scratch;
  std::vector<int> neg_index, neg_swapped, neg_count, valid_rows;

  HardNetBuffers(int rows, const caffe_mining::HardNetOptions& mode)
      : n(rows), options(mode),
        dist(static_cast<std::size_t>(rows) * rows),
        pos_dist(rows), neg_dist(rows), row_loss(rows), dloss_dpos(rows), dloss_dneg(rows),
        scratch(caffe_mining::hardnet_workspace_bytes<float>(rows, options, caffe_mining::Device::kCpu) /
                sizeof(float)),
        neg_index(rows), neg_swapped(rows), neg_count(rows), valid_rows(1) {}

  caffe_mining::HardNetMining<float> mining() {
    return {dist.data(), pos_dist.data(), neg_dist.data(), neg_index.data(), neg_swapped.data(),
            neg_count.data(), row_loss.data(), dloss_dpos.data(), dloss_dneg.data(), valid_rows.data()};
  }

  std::size_t bytes() const {
    return (dist.size() + 6 * static_cast<std::size_t>(n) + scratch.size()) * sizeof(float) +
           (3 * static_cast<std::size_t>(n) + 1) * sizeof(int);
  }
};

// What contrastive_forward_cpu / contrastive_backward_cpu need besides the inputs and the gradients.
struct ContrastiveBuffers {
  int n, dim;
  std::vector<float> diff, dist_sq, cost;
  std::vector<int> picked;
  std::vector<std::uint64_t> workspace;

  ContrastiveBuffers(int rows, int columns)
      : n(rows), dim(columns),
        diff(static_cast<std::size_t>(rows) * columns), dist_sq(rows), cost(rows), picked(rows),
        workspace(workspace_bytes(rows) / sizeof(std::uint64_t) + 1) {}

  static std::size_t workspace_bytes(int rows) {
    return caffe_mining::contrastive_workspace_bytes(rows, caffe_mining::ContrastiveOptions(),
                                                     caffe_mining::Device::kCpu);
  }

  std::size_t bytes() const {
    return (diff.size() + dist_sq.size() + cost.size()) * sizeof(float) + picked.size() * sizeof(int) +
           workspace_bytes(n);
  }
};

}  // namespace

extern "C" {

/// out (n x n) = anchor (n x dim) * positive^T: the one GEMM every distance matrix needs.
void bench_sgemm_abt(int n, int dim, const float* anchor, const float* positive, float* out) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, dim, 1.0f, anchor, dim, positive, dim, 0.0f, out, n);
}

/// Buffers for HardNetLoss at batch n: TRIPLET_MARGIN, margin 1, with anchor_swap (0/1) and batch_reduce (the
/// core's HardNetBatchReduce: 0 MIN, 1 AVERAGE, 2 RANDOM).
void* bench_hardnet_create(int n, int anchor_swap, int batch_reduce) {
  caffe_mining::HardNetOptions options;
  options.anchor_swap = anchor_swap != 0;
  options.batch_reduce = static_cast<caffe_mining::HardNetBatchReduce>(batch_reduce);
  return new HardNetBuffers(n, options);
}
void bench_hardnet_destroy(void* buffers) { delete static_cast<HardNetBuffers*>(buffers); }
std::size_t bench_hardnet_bytes(void* buffers) { return static_cast<HardNetBuffers*>(buffers)->bytes(); }

/// HardNetLoss as created, forward then backward; returns the loss. `uniforms` [n] are read by RANDOM only (the layer
/// draws new ones every pass; their values do not change the work).
float bench_hardnet_forward_backward(void* handle, int dim, const float* anchor, const float* positive,
                                     const float* uniforms, float* anchor_diff, float* positive_diff) {
  HardNetBuffers& buffers = *static_cast<HardNetBuffers*>(handle);
  const caffe_mining::HardNetMining<float> mining = buffers.mining();
  float loss = 0.0f;
  caffe_mining::hardnet_forward_cpu<float>(buffers.n, dim, anchor, positive, nullptr, uniforms, buffers.options,
                                           mining, buffers.scratch.data(), &loss);
  caffe_mining::hardnet_backward_cpu<float>(buffers.n, dim, anchor, positive, nullptr, buffers.options, mining,
                                            1.0f, buffers.scratch.data(), anchor_diff, positive_diff);
  return loss;
}

void* bench_contrastive_create(int n, int dim) { return new ContrastiveBuffers(n, dim); }
void bench_contrastive_destroy(void* buffers) { delete static_cast<ContrastiveBuffers*>(buffers); }
std::size_t bench_contrastive_bytes(void* buffers) { return static_cast<ContrastiveBuffers*>(buffers)->bytes(); }

/// MiningContrastiveLoss (non-legacy), forward then backward; returns the loss.
float bench_contrastive_forward_backward(void* handle, const float* a, const float* b, const float* sim,
                                         float margin, int mining_ratio, float* grad_a, float* grad_b) {
  ContrastiveBuffers& buffers = *static_cast<ContrastiveBuffers*>(handle);
  caffe_mining::ContrastiveOptions options;
  options.margin = margin;
  options.mining_ratio = mining_ratio;
  const caffe_mining::ContrastivePairs<float> pairs = {buffers.diff.data(), buffers.dist_sq.data(),
                                                       buffers.cost.data(), buffers.picked.data()};
  float loss = 0.0f;
  caffe_mining::contrastive_forward_cpu<float>(buffers.n, buffers.dim, a, b, sim, options, pairs,
                                               buffers.workspace.data(), &loss);
  caffe_mining::contrastive_backward_cpu<float>(buffers.n, buffers.dim, sim, options, pairs, 1.0f,
                                                buffers.workspace.data(), grad_a, grad_b);
  return loss;
}

}  // extern "C"
