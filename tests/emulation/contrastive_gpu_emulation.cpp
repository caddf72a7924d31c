// The MiningContrastiveLoss CUDA kernels' logic without a GPU (see hardnet_gpu_emulation.cpp for the idea):
//
//   contrastive_gpu_emulation select   <float|double> <seed> [plant]  the radix select (digit_histogram_kernel with
//                                                                     the kinds in shared memory, choose_digit_kernel,
//                                                                     mark_picked_kernel) against the CPU's picks
//   contrastive_gpu_emulation backward <float|double> <seed> [plant]  the backward (nonfinite_pairs_kernel's flag in
//                                                                     the workspace, backward_kernel's elements)
//                                                                     against the CPU gradients, and NaN everywhere
//                                                                     for a bad pair
// Prints "cases=<c> compared=<k> mismatches=<m>" last. plant: select: index_order (equal costs by higher index
// first); backward: flag_ignored (the elements do not read the workspace's flag).
//
// emulation-sources: caffe_layers/src/caffe/mining/contrastive_mining.cpp
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "caffe_mining/contrastive_mining.hpp"

namespace {

using namespace caffe_mining;  // NOLINT

std::string g_plant;
long g_compared = 0, g_mismatches = 0;

void expect(bool ok, const char* what, int c, int i) {
  ++g_compared;
  if (ok) return;
  if (++g_mismatches <= 10) std::printf("case %d %s[%d] differs\n", c, what, i);
}

template <typename Dtype>
std::vector<int> radix_picked(const std::vector<Dtype>& sim, const std::vector<Dtype>& cost, int num_picked) {
  const int n = static_cast<int>(sim.size());
  int num_similar = 0;
  for (int i = 0; i < n; ++i) num_similar += sim[i] != Dtype(0);
  int k_similar, k_dissimilar;
  split_picked_pairs(num_similar, n - num_similar, num_picked, &k_similar, &k_dissimilar);
  radix::KindSelection kind[2];  // the workspace's kinds
  radix::start(&kind[0], k_dissimilar);
  radix::start(&kind[1], k_similar);
  const int key_bytes = sizeof(Dtype);
  const int index_bytes = radix::index_bytes_for(n);
  const bool flip = g_plant == "index_order";
  auto inverted = [&](int i) { return flip ? static_cast<uint32_t>(i) : radix::inverted_index(i, index_bytes); };
  for (int pass = 0; pass < key_bytes + index_bytes; ++pass) {
    const radix::KindSelection kind_sel[2] = {kind[0], kind[1]};  // the block's shared copy
    std::vector<unsigned int> histogram(2 * radix::kBins, 0);
    for (int i = 0; i < n; ++i) {
      const int c = sim[i] != Dtype(0) ? 1 : 0;
      const radix::KindSelection& s = kind_sel[c];
      if (s.remaining <= 0) continue;
      const uint64_t key = hardness_key(cost[i]);
      const uint32_t inv = inverted(i);
      if (!radix::matches_prefix(s, key, inv)) continue;
      ++histogram[c * radix::kBins + radix::composite_digit(key, inv, pass, key_bytes, index_bytes)];
    }
    for (int c = 0; c < 2; ++c) radix::choose_digit(&kind[c], &histogram[c * radix::kBins], pass, key_bytes,
                                                    index_bytes);
  }
  std::vector<int> picked(n);
  for (int i = 0; i < n; ++i) {
    picked[i] = radix::at_least_threshold(kind[sim[i] != Dtype(0)], hardness_key(cost[i]), inverted(i));
  }
  return picked;
}

template <typename Dtype>
int run_select(std::mt19937_64& rng) {
  const int sizes[] = {1, 2, 7, 255, 256, 257, 1000, 65537};
  int cases = 0;
  for (int n : sizes) {
    for (int variant = 0; variant < 6; ++variant) {
      const int dim = 2, levels = 2 + variant, ratio = 1 + variant;
      const bool legacy = variant % 2;
      std::vector<Dtype> a(n * dim), b(n * dim), sim(n), diff(n * dim), dist_sq(n), cost(n);
      for (int k = 0; k < n * dim; ++k) {
        a[k] = Dtype(0.375) * static_cast<int>(rng() % levels);
        b[k] = Dtype(0.375) * static_cast<int>(rng() % levels);
      }
      for (int i = 0; i < n; ++i) sim[i] = variant < 3 ? Dtype(rng() % 2) : Dtype(variant == 5 || i % 17 == 3);
      const int num_picked = num_picked_pairs(n, ratio);
      std::vector<int> cpu(n);
      ContrastiveOptions options;
      options.legacy_version = legacy;
      options.mining_ratio = ratio;
      std::vector<uint64_t> workspace(contrastive_workspace_bytes(n, options, Device::kCpu) / 8 + 1);
      Dtype loss;
      contrastive_forward_cpu(n, dim, a.data(), b.data(), sim.data(), options,
                              ContrastivePairs<Dtype>{diff.data(), dist_sq.data(), cost.data(), cpu.data()},
                              workspace.data(), &loss);
      const std::vector<int> emulated = radix_picked(sim, cost, num_picked);
      for (int i = 0; i < n; ++i) expect(emulated[i] == cpu[i], "picked", cases, i);
      ++cases;
    }
  }
  return cases;
}

// nonfinite_pairs_kernel then backward_kernel, in queue order: the flag lives in the workspace
// (ContrastiveGpuWorkspace::backward_nonfinite), each element comes from the shared element functions.
template <typename Dtype>
void emulate_backward(int n, int dim, const Dtype* sim, Dtype margin, bool legacy, int num_picked, Dtype loss_grad,
                      const Dtype* diff, const Dtype* dist_sq, const int* picked, ContrastiveGpuWorkspace* workspace,
                      Dtype* grad_a, Dtype* grad_b) {
  const Dtype alpha = contrastive_gradient_scale(loss_grad, num_picked);
  workspace->backward_nonfinite = 0;
  for (int i = 0; i < n; ++i) {
    if (!math::is_finite(dist_sq[i])) workspace->backward_nonfinite = 1;
  }
  const bool nonfinite = workspace->backward_nonfinite != 0 && g_plant != "flag_ignored";
  const std::size_t count = static_cast<std::size_t>(n) * dim;
  for (std::size_t idx = 0; idx < count; ++idx) {
    Dtype g = Dtype(NAN);
    if (!nonfinite) {
      const std::size_t i = idx / dim;
      const Dtype factor =
          contrastive_pair_factor(picked[i] != 0, dist_sq[i], sim[i] != Dtype(0), margin, legacy, alpha);
      g = contrastive_gradient(factor, diff[idx]);
    }
    if (grad_a) grad_a[idx] = g;
    if (grad_b) grad_b[idx] = -g;
  }
}

template <typename Dtype>
bool same_bits(Dtype x, Dtype y) {
  if (std::isnan(x) && std::isnan(y)) return true;
  return std::memcmp(&x, &y, sizeof(Dtype)) == 0;
}

template <typename Dtype>
int run_backward(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  int cases = 0;
  for (int n : {1, 2, 5, 33, 100}) {
    for (int variant = 0; variant < 12; ++variant) {
      const int dim = 1 + variant % 5;
      const bool legacy = variant % 2, bad = variant % 3 == 2;
      const int which = variant / 4 % 3;  // both buffers, only grad_a, only grad_b
      std::vector<Dtype> a(n * dim), b(n * dim), sim(n), diff(n * dim), dist_sq(n), cost(n);
      for (int k = 0; k < n * dim; ++k) {
        a[k] = Dtype(unit(rng) * 2 - 1);
        b[k] = Dtype(unit(rng) * 2 - 1);
      }
      if (bad) a[static_cast<int>(unit(rng) * n) * dim] = Dtype(INFINITY);
      for (int i = 0; i < n; ++i) sim[i] = Dtype(rng() % 2);
      ContrastiveOptions options;
      options.legacy_version = legacy;
      options.mining_ratio = 1 + variant % 3;
      const int num_picked = num_picked_pairs(n, options.mining_ratio);
      std::vector<int> picked(n);
      std::vector<uint64_t> workspace(contrastive_workspace_bytes(n, options, Device::kCpu) / 8 + 1);
      const ContrastivePairs<Dtype> pairs = {diff.data(), dist_sq.data(), cost.data(), picked.data()};
      Dtype loss;
      contrastive_forward_cpu(n, dim, a.data(), b.data(), sim.data(), options, pairs, workspace.data(), &loss);
      std::vector<Dtype> cpu_a(n * dim), cpu_b(n * dim), emu_a(n * dim, Dtype(7)), emu_b(n * dim, Dtype(7));
      contrastive_backward_cpu(n, dim, sim.data(), options, pairs, Dtype(0.75), nullptr, cpu_a.data(), cpu_b.data());
      ContrastiveGpuWorkspace gpu_workspace;
      emulate_backward(n, dim, sim.data(), Dtype(1), legacy, num_picked, Dtype(0.75), diff.data(), dist_sq.data(),
                       picked.data(), &gpu_workspace, which == 2 ? nullptr : emu_a.data(),
                       which == 1 ? nullptr : emu_b.data());
      for (int k = 0; k < n * dim; ++k) {
        // A non-finite pair: NaN everywhere (the policy); else the CPU's bits.
        if (which != 2) expect(bad ? std::isnan(emu_a[k]) : same_bits(emu_a[k], cpu_a[k]), "grad_a", cases, k);
        if (which != 1) expect(bad ? std::isnan(emu_b[k]) : same_bits(emu_b[k], cpu_b[k]), "grad_b", cases, k);
      }
      ++cases;
    }
  }
  return cases;
}

template <typename Dtype>
int run(const std::string& check, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  if (check == "select") return run_select<Dtype>(rng);
  if (check == "backward") return run_backward<Dtype>(rng);
  std::fprintf(stderr, "unknown check %s\n", check.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s select|backward float|double [seed] [plant]\n", argv[0]);
    return 2;
  }
  const std::string check = argv[1], dtype = argv[2];
  const std::uint64_t seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1;
  if (argc > 4) g_plant = argv[4];
  const int cases = dtype == "double" ? run<double>(check, seed) : run<float>(check, seed);
  std::printf("cases=%d compared=%ld mismatches=%ld\n", cases, g_compared, g_mismatches);
  return 0;
}
