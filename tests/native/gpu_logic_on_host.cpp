// The GPU kernels' host/device logic, run serially on the host for the Python tests (tests/test_gpu_logic_on_host.py
// compiles this file against the tree's caffe_layers/include and loads it with ctypes): the contrastive radix select
// exactly as contrastive_mining.cu runs it (digit_histogram_kernel + choose_digit_kernel per pass, then
// mark_picked_kernel), the hardness key, and HardNet's element distance. The gtest MiningContrastiveRadixSelectTest
// does the same inside Caffe; this one needs no Caffe, so the mutation suite reaches these functions.
#include <cstdint>
#include <vector>

#include "caffe_mining/contrastive_mining.hpp"
#include "caffe_mining/hardnet.hpp"

namespace {

template <typename Dtype>
void radix_pick(int n, const Dtype* cost, const Dtype* sim, int num_picked, int* picked) {
  namespace radix = caffe_mining::radix;
  int num_similar = 0;
  for (int i = 0; i < n; ++i) num_similar += sim[i] != Dtype(0);
  int k_similar, k_dissimilar;
  caffe_mining::split_picked_pairs(num_similar, n - num_similar, num_picked, &k_similar, &k_dissimilar);
  radix::KindSelection kind[2];
  radix::start(&kind[0], k_dissimilar);
  radix::start(&kind[1], k_similar);
  const int key_bytes = sizeof(Dtype);
  const int index_bytes = radix::index_bytes_for(n);
  for (int pass = 0; pass < key_bytes + index_bytes; ++pass) {
    std::vector<unsigned int> histogram(2 * radix::kBins, 0);
    for (int i = 0; i < n; ++i) {
      const int c = sim[i] != Dtype(0);
      if (kind[c].remaining <= 0) continue;
      const uint64_t key = caffe_mining::hardness_key(cost[i]);
      const uint32_t inv = radix::inverted_index(i, index_bytes);
      if (!radix::matches_prefix(kind[c], key, inv)) continue;
      ++histogram[c * radix::kBins + radix::composite_digit(key, inv, pass, key_bytes, index_bytes)];
    }
    for (int c = 0; c < 2; ++c) radix::choose_digit(&kind[c], &histogram[c * radix::kBins], pass, key_bytes, index_bytes);
  }
  for (int i = 0; i < n; ++i) {
    picked[i] = radix::at_least_threshold(kind[sim[i] != Dtype(0)], caffe_mining::hardness_key(cost[i]),
                                          radix::inverted_index(i, index_bytes));
  }
}

}  // namespace

extern "C" {

void radix_pick_f32(int n, const float* cost, const float* sim, int num_picked, int* picked) {
  radix_pick(n, cost, sim, num_picked, picked);
}
void radix_pick_f64(int n, const double* cost, const double* sim, int num_picked, int* picked) {
  radix_pick(n, cost, sim, num_picked, picked);
}
uint64_t hardness_key_f32(float cost) { return caffe_mining::hardness_key(cost); }
uint64_t hardness_key_f64(double cost) { return caffe_mining::hardness_key(cost); }
float hardnet_distance_f32(float sq_norm_a, float sq_norm_p, float dot, float eps) {
  return caffe_mining::distance_from_dot(sq_norm_a, sq_norm_p, dot, eps);
}
double hardnet_distance_f64(double sq_norm_a, double sq_norm_p, double dot, double eps) {
  return caffe_mining::distance_from_dot(sq_norm_a, sq_norm_p, dot, eps);
}

}  // extern "C"
