// The TripletLoss CUDA kernels' logic without a GPU (see hardnet_gpu_emulation.cpp for the idea): the kernels'
// per-element steps (caffe_mining/triplet_gpu_steps.hpp) run serially, in reverse element order (the kernels'
// threads run in any order), on the CPU core's squared norms and dot products laid out as cuBLAS's SYRK leaves
// them (row-major lower triangle), against the CPU core:
//   triplet_gpu_emulation <float|double> <seed> [plant]
// compares D, the weights, the decisions, the row sums and the backward's S and row sums bit for bit, the terms
// exactly and the loss (a tree sum on the GPU) within rounding. plant: upper_triangle (the dot products where the
// CPU's SYRK leaves them, not where cuBLAS's does). Prints "cases=<c> compared=<k> mismatches=<m>" last.
//
// emulation-sources: caffe_layers/src/caffe/mining/triplet.cpp caffe_layers/src/caffe/mining/gemm_distances.cpp caffe_layers/src/caffe/mining/distance_gradients.cpp
#include <cblas.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "caffe_mining/distances/squared_norm.hpp"
#include "caffe_mining/triplet.hpp"
#include "caffe_mining/triplet_gpu_steps.hpp"

namespace {

using namespace caffe_mining;  // NOLINT

std::string g_plant;
long g_compared = 0, g_mismatches = 0;

template <typename T>
void expect_same(const T& got, const T& want, const char* what, int c, std::size_t i) {
  ++g_compared;
  if (std::memcmp(&got, &want, sizeof(T)) == 0) return;
  if (++g_mismatches <= 10) std::printf("case %d %s[%zu] differs\n", c, what, i);
}

void syrk_upper(int n, int dim, const float* x, float* c) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, dim, 1.0f, x, dim, 0.0f, c, n);
}
void syrk_upper(int n, int dim, const double* x, double* c) {
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, dim, 1.0, x, dim, 0.0, c, n);
}

struct Buffers {
  template <typename Dtype>
  struct Of {
    std::vector<Dtype> dist, weight, row_loss, scratch;
    std::vector<int> positive, negative, pair_negative;
    std::vector<long long> row_terms, terms;
    explicit Of(int n)
        : dist(n * n), weight(n * n), row_loss(n),
          scratch(triplet_workspace_bytes<Dtype>(n, TripletOptions{}, Device::kCpu) / sizeof(Dtype)), positive(n),
          negative(n), pair_negative(n * n), row_terms(n), terms(1) {}
    TripletMining<Dtype> mining(TripletMiner miner) {
      TripletMining<Dtype> m;
      m.dist = dist.data();
      m.weight = weight.data();
      m.positive = miner == TripletMiner::kBatchHard ? positive.data() : nullptr;
      m.negative = miner == TripletMiner::kBatchHard ? negative.data() : nullptr;
      m.pair_negative = miner == TripletMiner::kSemiHard ? pair_negative.data() : nullptr;
      m.row_loss = row_loss.data();
      m.row_terms = row_terms.data();
      m.terms = terms.data();
      return m;
    }
  };
};

template <typename Dtype>
void run_case(int c, std::mt19937* rng, const TripletOptions& options) {
  std::uniform_int_distribution<int> pick_n(1, 70), pick_dim(1, 9), grid(-4, 4);
  std::normal_distribution<double> normal(0.0, 1.0);
  const int n = pick_n(*rng), dim = pick_dim(*rng);
  const bool dyadic = c % 2 == 0;  // exact distances: ties
  std::vector<Dtype> x(n * dim), labels(n);
  for (auto& v : x) v = dyadic ? Dtype(grid(*rng) * 0.25) : Dtype(normal(*rng));
  std::uniform_int_distribution<int> pick_label(0, std::max(1, n / 4));
  for (auto& y : labels) y = Dtype(pick_label(*rng));

  typename Buffers::Of<Dtype> cpu(n), gpu(n);
  const TripletMining<Dtype> cpu_mining = cpu.mining(options.mining);
  Dtype cpu_loss;
  triplet_forward_cpu(n, dim, x.data(), labels.data(), options, cpu_mining, cpu.scratch.data(), &cpu_loss);
  std::vector<Dtype> grad(n * dim);
  // A negative loss weight in every third case: S's zeros then carry its sign.
  const Dtype loss_weight = c % 3 == 0 ? Dtype(-0.7) : Dtype(0.7);
  triplet_backward_cpu(n, dim, x.data(), options, cpu_mining, loss_weight, cpu.scratch.data(), grad.data());

  // The device's inputs: the CPU's norms, and its dot products where cuBLAS's SYRK puts them (row-major lower).
  const std::size_t nn = static_cast<std::size_t>(n);
  std::vector<Dtype> sq_norm(n), dots(nn * nn);
  for (int i = 0; i < n; ++i) sq_norm[i] = squared_norm(dim, x.data() + i * dim);
  syrk_upper(n, dim, x.data(), dots.data());
  for (int r = 0; r < n; ++r) {
    for (int col = 0; col < n; ++col) {
      if (r < col) continue;
      gpu.dist[r * nn + col] = g_plant == "upper_triangle" ? dots[r * nn + col] : dots[col * nn + r];
      if (r != col) gpu.dist[col * nn + r] = Dtype(12345);  // what no step may read
    }
  }
  const TripletMining<Dtype> gpu_mining = gpu.mining(options.mining);
  for (std::size_t e = nn * nn; e-- > 0;) {
    triplet_gpu::pair_distance(n, e, sq_norm.data(), false, Dtype(options.eps), options.squared, gpu.dist.data());
  }
  const TripletRowLoss<Dtype> term = {static_cast<Dtype>(options.margin), options.soft_margin};
  for (int a = n - 1; a >= 0; --a) triplet_gpu::anchor(options.mining, term, n, a, labels.data(), false, gpu_mining);
  // loss_kernel: 256 strided partial sums, then the tree.
  const int threads = 256;
  std::vector<Dtype> part(threads, Dtype(0));
  std::vector<long long> part_terms(threads, 0);
  for (int t = 0; t < threads; ++t) {
    for (int a = t; a < n; a += threads) {
      part[t] += gpu.row_loss[a];
      part_terms[t] += gpu.row_terms[a];
    }
  }
  for (int half = threads / 2; half > 0; half /= 2) {
    for (int t = 0; t < half; ++t) {
      part[t] += part[t + half];
      part_terms[t] += part_terms[t + half];
    }
  }
  const Dtype gpu_loss = part_terms[0] > 0 ? part[0] / static_cast<Dtype>(part_terms[0]) : Dtype(0);

  for (std::size_t e = 0; e < nn * nn; ++e) {
    expect_same(gpu.dist[e], cpu.dist[e], "dist", c, e);
    expect_same(gpu.weight[e], cpu.weight[e], "weight", c, e);
    if (options.mining == TripletMiner::kSemiHard) {
      expect_same(gpu.pair_negative[e], cpu.pair_negative[e], "pair", c, e);
    }
  }
  for (int a = 0; a < n; ++a) {
    expect_same(gpu.row_loss[a], cpu.row_loss[a], "row_loss", c, a);
    expect_same(gpu.row_terms[a], cpu.row_terms[a], "row_terms", c, a);
    if (options.mining == TripletMiner::kBatchHard) {
      expect_same(gpu.positive[a], cpu.positive[a], "positive", c, a);
      expect_same(gpu.negative[a], cpu.negative[a], "negative", c, a);
    }
  }
  expect_same(part_terms[0], cpu.terms[0], "terms", c, 0);
  ++g_compared;
  const double tolerance = sizeof(Dtype) == 4 ? 1e-5 : 1e-13;
  if (!(std::fabs(double(gpu_loss) - double(cpu_loss)) <= tolerance * (1 + std::fabs(double(cpu_loss))))) {
    if (++g_mismatches <= 10) std::printf("case %d loss %.17g vs %.17g\n", c, double(gpu_loss), double(cpu_loss));
  }
  // Backward: S entry by entry and its row sums in increasing j, as the CPU's scratch holds them.
  std::vector<Dtype> s(nn * nn), row_sum(n);
  for (std::size_t e = nn * nn; e-- > 0;) {
    s[e] = triplet_gpu::gradient_weight(n, e, gpu.dist.data(), gpu.weight.data(), part_terms[0], loss_weight,
                                        options.squared);
  }
  for (int i = 0; i < n; ++i) {
    Dtype sum = Dtype(0);
    for (int j = 0; j < n; ++j) sum += s[i * nn + j];
    row_sum[i] = sum;
  }
  if (cpu.terms[0] > 0) {  // the CPU's backward returns early without a term
    // BATCH_ALL's CPU backward leaves S in its scratch. The sparse miners' visits only S's entries at the picks (and
    // its scratch holds them as a list): there, each GPU entry against the CPU's entry function on the CPU's D and W.
    const Dtype scale = loss_weight / static_cast<Dtype>(cpu.terms[0]);
    for (std::size_t e = 0; e < nn * nn; ++e) {
      const Dtype expected = options.mining == TripletMiner::kBatchAll
                                 ? cpu.scratch[nn + e]
                                 : triplet_gradient_weight(cpu.dist.data(), cpu.weight.data(), n,
                                                           static_cast<int>(e / nn), static_cast<int>(e % nn), scale,
                                                           options.squared);
      expect_same(s[e], expected, "S", c, e);
    }
    for (int i = 0; i < n; ++i) expect_same(row_sum[i], cpu.scratch[nn + nn * nn + i], "row_sum", c, i);
  }
}

template <typename Dtype>
int run(int seed) {
  std::mt19937 rng(seed);
  int cases = 0;
  for (int miner = 0; miner < 3; ++miner) {
    for (int variant = 0; variant < 4; ++variant) {
      for (int k = 0; k < 4; ++k) {
        TripletOptions options;
        options.mining = static_cast<TripletMiner>(miner);
        options.soft_margin = variant & 1;
        options.squared = variant & 2;
        options.margin = 0.5;
        run_case<Dtype>(cases++, &rng, options);
      }
    }
  }
  return cases;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <float|double> <seed> [plant]\n", argv[0]);
    return 2;
  }
  const std::string dtype = argv[1];
  const int seed = std::atoi(argv[2]);
  if (argc > 3) g_plant = argv[3];
  const int cases = dtype == "float" ? run<float>(seed) : run<double>(seed);
  std::printf("cases=%d compared=%ld mismatches=%ld\n", cases, g_compared, g_mismatches);
  return 0;
}
