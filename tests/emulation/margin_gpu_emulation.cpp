// The MarginLoss CUDA kernels' logic without a GPU: runs the steps of margin_gpu_steps.hpp serially, kernel after
// kernel as margin.cu queues them, each kernel's threads in reverse order (a GPU promises no order), and compares
// with margin_forward_cpu / margin_backward_cpu bit for bit: counts, offsets, triplets, distances, loss, the
// embedding's and beta's gradients.
//
//   margin_gpu_emulation <float|double> <seed> [plant]
// Prints "cases=<c> compared=<k> mismatches=<m>" last (and the first mismatches before); exit status 0.
// plant (a deliberate bug, to show the comparison catches it): order (a gradient element summed over j in
// decreasing order), fma (a fused multiply-add in that sum), one_row (every anchor's cumulative weights in one
// shared row, the CPU's layout, although the draw kernel runs after all rows).
//
// emulation-sources: caffe_layers/src/caffe/mining/margin.cpp
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "caffe_mining/margin.hpp"
#include "caffe_mining/margin_gpu_steps.hpp"

namespace {

using namespace caffe_mining;  // NOLINT

std::string g_plant;
long g_compared = 0, g_mismatches = 0;

template <typename T>
bool same_bits(T x, T y) {
  if (std::isnan(x) && std::isnan(y)) return true;
  return std::memcmp(&x, &y, sizeof(T)) == 0;
}

template <typename T>
void expect_same(const char* what, int c, std::size_t i, T got, T want) {
  ++g_compared;
  if (same_bits(got, want)) return;
  if (++g_mismatches <= 10) {
    std::printf("case %d %s[%zu]: emulated %.17g, cpu %.17g\n", c, what, i, static_cast<double>(got),
                static_cast<double>(want));
  }
}

template <typename Dtype>
struct Buffers {
  std::vector<int> triplets, anchor_count, anchor_offset, counts;
  std::vector<Dtype> pos_dist, neg_dist;
  std::vector<double> workspace;
  Buffers(int n, int capacity, const MarginOptions& options, Device device)
      : triplets(3 * static_cast<std::size_t>(capacity), -7), anchor_count(n), anchor_offset(n), counts(2),
        pos_dist(capacity), neg_dist(capacity), workspace(margin_workspace_bytes<Dtype>(n, options, device) / 8 + 1) {}
  MarginMining<Dtype> view() {
    return {triplets.data(), pos_dist.data(), neg_dist.data(), anchor_count.data(), anchor_offset.data(),
            counts.data()};
  }
};

// margin_forward_gpu and margin_backward_gpu, kernel by kernel, threads in reverse order.
template <typename Dtype>
void emulate(int n, int dim, const Dtype* x, const Dtype* labels, const Dtype* beta, const MarginOptions& o,
             uint64_t iteration, int capacity, Buffers<Dtype>* b, Dtype loss_weight, Dtype* loss, Dtype* grad,
             Dtype* beta_diff) {
  void* ws = b->workspace.data();
  char* base = static_cast<char*>(ws);
  Dtype* dist = reinterpret_cast<Dtype*>(base);
  double* cumulative = reinterpret_cast<double*>(base + margin_workspace_offset<Dtype>(n, 1));
  double* totals = reinterpret_cast<double*>(base + margin_workspace_offset<Dtype>(n, 2));
  int* flag = reinterpret_cast<int*>(base + margin_workspace_offset<Dtype>(n, 3));
  const std::size_t count = static_cast<std::size_t>(n) * dim, betas = o.num_classes > 0 ? o.num_classes : 1;
  const MarginMining<Dtype> mining = b->view();
  *flag = 0;
  for (std::size_t k = count + betas; k-- > 0;) margin_gpu::check_finite(k, count, x, beta, flag);
  for (std::size_t k = static_cast<std::size_t>(n) * n; k-- > 0;) {
    margin_gpu::distance(static_cast<int>(k / n), static_cast<int>(k % n), n, dim, x, Dtype(o.eps), dist, flag);
  }
  std::vector<double> shared_row(n);
  for (int i = n; i-- > 0;) {
    double* rows = g_plant == "one_row" ? shared_row.data() - static_cast<std::size_t>(i) * n : cumulative;
    margin_gpu::anchor_row(i, n, dim, dist, labels, o.sampler, o.cutoff, o.nonzero_loss_cutoff,
                           o.negatives_per_positive, flag, rows, totals, mining.anchor_count);
  }
  margin_gpu::offsets(n, capacity, flag, mining.anchor_count, mining.anchor_offset, mining.counts);
  for (int i = n; i-- > 0;) {
    const double* rows = g_plant == "one_row" ? shared_row.data() - static_cast<std::size_t>(i) * n : cumulative;
    margin_gpu::anchor_draws(i, n, dist, labels, rows, totals, o.negatives_per_positive, o.seed, iteration, mining);
  }
  margin_gpu::loss(beta, labels, o.num_classes, Dtype(o.margin), Dtype(o.nu), mining, loss);
  for (int c = static_cast<int>(betas); c-- > 0;) {
    margin_gpu::beta_gradient(c, beta, labels, o.num_classes, Dtype(o.margin), Dtype(o.nu), mining, loss_weight,
                              beta_diff);
  }
  Dtype* coefficient = dist;
  for (std::size_t k = static_cast<std::size_t>(n) * n; k-- > 0;) {
    margin_gpu::pair_coefficient(static_cast<int>(k / n), static_cast<int>(k % n), n, dim, x, beta, labels,
                                 o.num_classes, Dtype(o.margin), Dtype(o.eps), mining, loss_weight, coefficient);
  }
  for (std::size_t k = count; k-- > 0;) {
    const int r = static_cast<int>(k / dim), e = static_cast<int>(k % dim);
    margin_gpu::gradient(r, e, n, dim, x, coefficient, mining.counts, grad);
    if ((g_plant == "order" || g_plant == "fma") && mining.counts[0] > 0 && mining.counts[1] > 0) {
      Dtype sum = Dtype(0);
      const Dtype* row = coefficient + static_cast<std::size_t>(r) * n;
      for (int j = 0; j < n; ++j) {
        const int jj = g_plant == "order" ? n - 1 - j : j;
        if (row[jj] == Dtype(0)) continue;
        const Dtype diff = x[static_cast<std::size_t>(r) * dim + e] - x[static_cast<std::size_t>(jj) * dim + e];
        sum = g_plant == "fma" ? std::fma(row[jj], diff, sum) : sum + row[jj] * diff;
      }
      grad[k] = sum;
    }
  }
}

template <typename Dtype>
void run_case(int c, std::mt19937* engine) {
  std::uniform_int_distribution<int> pick(0, 1 << 20);
  // Every fourth case a larger batch (up to ~100 rows): the CPU's vector lanes with every tail length.
  const bool large = c % 4 == 2;
  const int classes = 2 + pick(*engine) % (large ? 19 : 5), per_class = 1 + pick(*engine) % (large ? 5 : 4);
  const int singles = pick(*engine) % 3;
  const int dims[] = {1, 2, 3, 4, 5, 7, 8, 33, 128, 130};
  const int dim = dims[pick(*engine) % 10];
  const int n = classes * per_class + singles;
  if (n < 2) return;
  MarginOptions o;
  o.sampler = pick(*engine) % 3 == 0 ? NegativeSampler::kUniform : NegativeSampler::kDistanceWeighted;
  o.negatives_per_positive = 1 + pick(*engine) % 3;
  o.num_classes = pick(*engine) % 2 ? classes + singles : 0;
  o.nu = pick(*engine) % 2 ? 0.1 : 0.0;
  o.nonzero_loss_cutoff = pick(*engine) % 3 == 0 ? 0.0 : 1.4;
  o.seed = pick(*engine);
  std::normal_distribution<double> normal;
  std::vector<Dtype> x(static_cast<std::size_t>(n) * dim), labels(n);
  for (int i = 0; i < n; ++i) {
    labels[i] = Dtype(i < classes * per_class ? i / per_class : classes + (i - classes * per_class));
    double norm = 0;
    std::vector<double> row(dim);
    for (double& v : row) {
      v = normal(*engine);
      norm += v * v;
    }
    for (int k = 0; k < dim; ++k) x[static_cast<std::size_t>(i) * dim + k] = Dtype(row[k] / std::sqrt(norm));
  }
  if (c % 7 == 3) x[pick(*engine) % x.size()] = Dtype(NAN);       // the non-finite path
  if (c % 11 == 5) x[pick(*engine) % x.size()] = x[0];               // ties / near-duplicates
  if (c % 6 == 1 || c % 6 == 4) {  // a distance exactly at nonzero_loss_cutoff (1) or at cutoff (4)
    const int i = pick(*engine) % n, j = pick(*engine) % n;
    const double d = static_cast<double>(margin_distance(dim, x.data(), i, j, static_cast<Dtype>(o.eps)));
    if (c % 6 == 1 && o.nonzero_loss_cutoff > 0.0 && d > 0.0) o.nonzero_loss_cutoff = d;
    if (c % 6 == 4 && d > 0.0) o.cutoff = d;
  }
  std::vector<Dtype> beta(o.num_classes > 0 ? o.num_classes : 1);
  for (Dtype& b : beta) b = Dtype(0.9 + 0.4 * (pick(*engine) % 100) / 100.0);
  const int capacity = static_cast<int>(margin_triplet_capacity(labels.data(), n, o));
  const int slots = capacity > 0 ? capacity : 1;
  const uint64_t iteration = pick(*engine) % 50;
  const Dtype loss_weight = Dtype(0.75);

  Buffers<Dtype> cpu(n, slots, o, Device::kCpu), gpu(n, slots, o, Device::kGpu);
  Dtype cpu_loss, gpu_loss;
  std::vector<Dtype> cpu_grad(x.size()), gpu_grad(x.size()), cpu_beta(beta.size()), gpu_beta(beta.size());
  margin_forward_cpu(n, dim, x.data(), labels.data(), beta.data(), o, iteration, capacity, cpu.view(),
                     static_cast<void*>(cpu.workspace.data()), &cpu_loss);
  margin_backward_cpu(n, dim, x.data(), labels.data(), beta.data(), o, cpu.view(), loss_weight,
                      static_cast<void*>(cpu.workspace.data()), cpu_grad.data(), cpu_beta.data());
  emulate(n, dim, x.data(), labels.data(), beta.data(), o, iteration, capacity, &gpu, loss_weight, &gpu_loss,
          gpu_grad.data(), gpu_beta.data());
  expect_same("counts", c, 0, gpu.counts[0], cpu.counts[0]);
  expect_same("counts", c, 1, gpu.counts[1], cpu.counts[1]);
  for (int i = 0; i < n; ++i) {
    expect_same("anchor_count", c, i, gpu.anchor_count[i], cpu.anchor_count[i]);
    expect_same("anchor_offset", c, i, gpu.anchor_offset[i], cpu.anchor_offset[i]);
  }
  const int triplets = cpu.counts[0] > 0 ? cpu.counts[0] : 0;
  for (std::size_t t = 0; t < static_cast<std::size_t>(triplets); ++t) {
    for (int k = 0; k < 3; ++k) expect_same("triplets", c, 3 * t + k, gpu.triplets[3 * t + k], cpu.triplets[3 * t + k]);
    expect_same("pos_dist", c, t, gpu.pos_dist[t], cpu.pos_dist[t]);
    expect_same("neg_dist", c, t, gpu.neg_dist[t], cpu.neg_dist[t]);
  }
  expect_same("loss", c, 0, gpu_loss, cpu_loss);
  for (std::size_t k = 0; k < x.size(); ++k) expect_same("grad", c, k, gpu_grad[k], cpu_grad[k]);
  for (std::size_t k = 0; k < beta.size(); ++k) expect_same("beta_diff", c, k, gpu_beta[k], cpu_beta[k]);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <float|double> <seed> [plant]\n", argv[0]);
    return 2;
  }
  const std::string dtype = argv[1];
  g_plant = argc > 3 ? argv[3] : "";
  std::mt19937 engine(static_cast<unsigned>(std::atoi(argv[2])));
  const int cases = 120;
  for (int c = 0; c < cases; ++c) {
    if (dtype == "float") {
      run_case<float>(c, &engine);
    } else {
      run_case<double>(c, &engine);
    }
  }
  // The layer sizes one workspace for both devices with the GPU's bytes: the CPU's must never need more.
  const MarginOptions defaults;
  for (int n = 1; n <= 600; ++n) {
    ++g_compared;
    const bool fits = dtype == "float"
        ? margin_workspace_bytes<float>(n, defaults, Device::kCpu) <= margin_workspace_bytes<float>(n, defaults, Device::kGpu)
        : margin_workspace_bytes<double>(n, defaults, Device::kCpu) <=
              margin_workspace_bytes<double>(n, defaults, Device::kGpu);
    if (!fits && ++g_mismatches <= 10) std::printf("workspace: the CPU needs more bytes than the GPU at n=%d\n", n);
  }
  std::printf("cases=%d compared=%ld mismatches=%ld\n", cases, g_compared, g_mismatches);
  return 0;
}
