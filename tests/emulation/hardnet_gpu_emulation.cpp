// The HardNet CUDA kernels' logic without a GPU: runs the steps of hardnet_gpu_steps.hpp serially, in the order the
// kernels of hardnet.cu run them (lanes, butterflies, ballots, 32-column chunks), on the CPU core's own dot products
// or distances, and compares with the CPU core bit for bit.
//
//   hardnet_gpu_emulation forward  <float|double> <seed> [plant]   mining decisions of every reduction
//   hardnet_gpu_emulation backward <float|double> <seed> [plant]   MIN/RANDOM gradients (hubs, anchor swap)
//   hardnet_gpu_emulation policy   <float|double>                  the non-finite flag
// Prints "cases=<c> compared=<k> mismatches=<m>" last (and the first mismatches before); exit status 0.
// plant (a deliberate bug, to show the comparison catches it): backward: order (a row's incoming terms in
// decreasing i), own_last (own terms after the incoming ones), fma (fused multiply-add in the incoming terms);
// forward: last_tie (the highest column among equal minima), tile_ij (the swap tile loaded untransposed), rank_up
// (RANDOM takes the next valid candidate).
//
// emulation-sources: caffe_layers/src/caffe/mining/hardnet.cpp caffe_layers/src/caffe/mining/hardest_negative_row.cpp caffe_layers/src/caffe/mining/gemm_distances.cpp caffe_layers/src/caffe/mining/distance_gradients.cpp
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "caffe_mining/hardnet.hpp"
#include "caffe_mining/hardnet_gpu_steps.hpp"

namespace {

using namespace caffe_mining;             // NOLINT
using namespace caffe_mining::hardnet_gpu;  // NOLINT

std::string g_plant;
long g_compared = 0, g_mismatches = 0;

template <typename T>
bool same_bits(T x, T y) {
  if (std::isnan(x) && std::isnan(y)) return true;
  return std::memcmp(&x, &y, sizeof(T)) == 0;
}

template <typename T>
void expect_same(const char* what, int c, int i, T got, T want) {
  ++g_compared;
  if (same_bits(got, want)) return;
  if (++g_mismatches <= 10) {
    std::printf("case %d %s[%d]: emulated %.17g, cpu %.17g\n", c, what, i, static_cast<double>(got),
                static_cast<double>(want));
  }
}

// Owns the buffers of a HardNetMining.
template <typename Dtype>
struct MiningBuffers {
  std::vector<Dtype> dist, pos_dist, neg_dist, row_loss, dloss_dpos, dloss_dneg;
  std::vector<int> neg_index, neg_swapped, neg_count, valid_rows;
  explicit MiningBuffers(int n)
      : dist(static_cast<std::size_t>(n) * n), pos_dist(n), neg_dist(n), row_loss(n), dloss_dpos(n), dloss_dneg(n),
        neg_index(n), neg_swapped(n), neg_count(n), valid_rows(1) {}
  HardNetMining<Dtype> view() {
    return {dist.data(),       pos_dist.data(),   neg_dist.data(),   neg_index.data(),  neg_swapped.data(),
            neg_count.data(),  row_loss.data(),   dloss_dpos.data(), dloss_dneg.data(), valid_rows.data()};
  }
};

// ---- forward: squared_min_rows_kernel, a warp per row

template <typename Dtype>
void emulate_squared_min_rows(int n, const Dtype* dots, const Dtype* sq_norm_a, const Dtype* sq_norm_p,
                              const Dtype* labels, Dtype eps, Dtype x_threshold, const HardNetOptions& options,
                              const HardNetMining<Dtype>& mining) {
  for (int i = 0; i < n; ++i) {
    const Dtype* row = dots + static_cast<std::size_t>(i) * n;
    SquaredMinimum<Dtype> lanes[kWarp];
    for (int lane = 0; lane < kWarp; ++lane) {
      lanes[lane] = squared_minimum_start<Dtype>();
      for (int j = lane; j < n; j += kWarp) {
        const Dtype x = squared_distance_from_dot(sq_norm_a[i], sq_norm_p[j], row[j], eps);
        squared_minimum_add(&lanes[lane], squared_valid(labels, i, j, x, x_threshold), x);
      }
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {  // __shfl_xor_sync butterfly
      SquaredMinimum<Dtype> before[kWarp];
      for (int lane = 0; lane < kWarp; ++lane) before[lane] = lanes[lane];
      for (int lane = 0; lane < kWarp; ++lane) squared_minimum_merge(&lanes[lane], before[lane ^ offset]);
    }
    const SquaredMinimum<Dtype> share = lanes[0];
    int chosen = -1;
    if (share.count > 0) {
      const Dtype x_max = largest_with_same_root(share.x_min);
      for (int start = 0; start < n && chosen < 0; start += kWarp) {
        unsigned int hits = 0;
        for (int lane = 0; lane < kWarp; ++lane) {
          const int j = start + lane;
          if (j >= n) continue;
          const Dtype x = squared_distance_from_dot(sq_norm_a[i], sq_norm_p[j], row[j], eps);
          if (squared_valid(labels, i, j, x, x_threshold) && x <= x_max) hits |= 1u << lane;
        }
        if (hits != 0u) {
          int lane = 0;
          if (g_plant == "last_tie") {
            lane = 31;
            while (((hits >> lane) & 1u) == 0u) --lane;
          } else {
            while (((hits >> lane) & 1u) == 0u) ++lane;  // __ffs
          }
          chosen = start + lane;
        }
      }
    }
    const Dtype pos = math::sqrt(squared_distance_from_dot(sq_norm_a[i], sq_norm_p[i], row[i], eps));
    HardNetCandidate<Dtype> cand = {Dtype(0), false, false};
    if (chosen >= 0) cand = {math::sqrt(share.x_min), true, false};
    write_row(mining, i, pos, share.count, chosen, cand, Dtype(0), Dtype(0), options);
  }
}

// ---- forward: mine_rows_kernel, a block of kTileRows rows, a warp per row, D_ji from the block's swap tile

template <typename Dtype>
void emulate_mine_rows(int n, const Dtype* dist, const Dtype* labels, const Dtype* uniforms,
                       const HardNetOptions& options, const HardNetMining<Dtype>& mining) {
  const Dtype margin = static_cast<Dtype>(options.margin);
  const Dtype threshold = static_cast<Dtype>(options.duplicate_threshold);
  const bool swap = options.anchor_swap;
  const bool average = options.batch_reduce == HardNetBatchReduce::kAverage;
  Dtype tile[kWarp][kTileRows];
  auto load_tile = [&](int i0, int j0) {  // load_swap_tile, thread by thread
    for (int t = 0; t < kWarp * kTileRows; ++t) {
      const TileCell cell = swap_tile_cell(t);
      const int j = j0 + cell.column, i = i0 + cell.row;
      const std::size_t source = g_plant == "tile_ij" ? static_cast<std::size_t>(i) * n + j
                                                       : static_cast<std::size_t>(j) * n + i;
      tile[cell.column][cell.row] = j < n && i < n ? dist[source] : Dtype(0);
    }
  };
  auto candidate = [&](int i, int w, int lane, int j) {  // tile_candidate
    const Dtype d_ij = dist[static_cast<std::size_t>(i) * n + j];
    const bool valid_ij = hardnet_negative_valid(labels, i, j, d_ij, threshold);
    if (!swap) return hardnet_candidate_of(d_ij, valid_ij, d_ij, false, false);
    const Dtype d_ji = tile[lane][w];
    return hardnet_candidate_of(d_ij, valid_ij, d_ji, hardnet_negative_valid(labels, j, i, d_ji, threshold), true);
  };
  for (int i0 = 0; i0 < n; i0 += kTileRows) {
    RowShare<Dtype> lanes[kTileRows][kWarp];
    for (int w = 0; w < kTileRows; ++w) {
      for (int lane = 0; lane < kWarp; ++lane) lanes[w][lane] = row_share_start<Dtype>();
    }
    for (int j0 = 0; j0 < n; j0 += kWarp) {
      if (swap) load_tile(i0, j0);
      for (int w = 0; w < kTileRows && i0 + w < n; ++w) {
        const int i = i0 + w;
        const Dtype pos = dist[static_cast<std::size_t>(i) * n + i];
        for (int lane = 0; lane < kWarp && j0 + lane < n; ++lane) {
          row_share_add(&lanes[w][lane], candidate(i, w, lane, j0 + lane), j0 + lane, pos, options.loss_type,
                        margin, average);
        }
      }
    }
    int count[kTileRows], chosen[kTileRows], rank[kTileRows];
    for (int w = 0; w < kTileRows && i0 + w < n; ++w) {
      RowShare<Dtype>* share = lanes[w];
      for (int offset = kWarp / 2; offset > 0; offset /= 2) {  // __shfl_down_sync: lane l merges lane l + offset
        RowShare<Dtype> before[kWarp];
        for (int lane = 0; lane < kWarp; ++lane) before[lane] = share[lane];
        for (int lane = 0; lane < offset; ++lane) row_share_merge(&share[lane], before[lane + offset]);
      }
      count[w] = share[0].count;
      chosen[w] = share[0].hardest;
      rank[w] = count[w] > 0 ? hardnet_random_rank(uniforms[i0 + w], count[w]) : 0;
      if (g_plant == "rank_up" && rank[w] + 1 < count[w]) ++rank[w];
    }
    if (options.batch_reduce == HardNetBatchReduce::kRandom) {
      bool done[kTileRows];
      for (int w = 0; w < kTileRows; ++w) {
        done[w] = i0 + w >= n || count[w] == 0;
        if (i0 + w < n) chosen[w] = -1;
      }
      for (int j0 = 0; j0 < n; j0 += kWarp) {
        if (swap) load_tile(i0, j0);
        for (int w = 0; w < kTileRows; ++w) {
          if (done[w]) continue;
          unsigned int valid_mask = 0;
          for (int lane = 0; lane < kWarp && j0 + lane < n; ++lane) {
            if (candidate(i0 + w, w, lane, j0 + lane).valid) valid_mask |= 1u << lane;
          }
          const int hit_lane = rank_in_chunk(valid_mask, &rank[w]);
          if (hit_lane >= 0) {
            chosen[w] = j0 + hit_lane;
            done[w] = true;
          }
        }
      }
    }
    for (int w = 0; w < kTileRows && i0 + w < n; ++w) {
      const int i = i0 + w;
      HardNetCandidate<Dtype> cand = {Dtype(0), false, false};
      if (chosen[w] >= 0) cand = hardnet_candidate(dist, labels, n, i, chosen[w], threshold, swap);
      write_row(mining, i, dist[static_cast<std::size_t>(i) * n + i], count[w], chosen[w], cand,
                lanes[w][0].loss_sum, lanes[w][0].dpos_sum, options);
    }
  }
}

// ---- backward: scatter_keys_kernel + gather_backward_kernel

template <typename Dtype>
void emulate_gather_backward(int n, int dim, const Dtype* anchor, const Dtype* positive,
                             const HardNetMining<Dtype>& mining, Dtype loss_weight, Dtype* anchor_diff,
                             Dtype* positive_diff) {
  const Dtype scale = gradient_scale(loss_weight, mining.valid_rows[0]);
  std::vector<int> key(n), incoming(n, 0);
  for (int i = 0; i < n; ++i) {
    key[i] = scatter_key(mining, n, i, scale);
    if (key[i] >= 0) ++incoming[key[i] >= n ? key[i] - n : key[i]];
  }
  const bool nonfinite = !math::is_finite(mining.pos_dist[0]);
  for (int r = 0; r < n; ++r) {
    Dtype* da = anchor_diff + static_cast<std::size_t>(r) * dim;
    Dtype* dp = positive_diff + static_cast<std::size_t>(r) * dim;
    for (int k = 0; k < dim; ++k) da[k] = dp[k] = nonfinite ? Dtype(NAN) : Dtype(0);
    if (nonfinite) continue;
    auto own = [&]() {
      for (int k = 0; k < dim; ++k) add_own_terms(mining, dim, anchor, positive, r, k, scale, &da[k], &dp[k]);
    };
    auto incoming_term = [&](int source) {
      for (int k = 0; k < dim; ++k) {
        if (g_plant == "fma" && key[source] >= n) {  // what an unguarded `acc += c * (a - p)` compiles to
          const std::size_t row_i = static_cast<std::size_t>(source) * dim;
          da[k] = std::fma(negative_coeff(mining, source, scale), anchor[static_cast<std::size_t>(r) * dim + k] -
                           positive[row_i + k], da[k]);
          continue;
        }
        add_incoming_term(mining, n, dim, anchor, positive, source, key[source], k, scale, &da[k], &dp[k]);
      }
    };
    bool own_done = g_plant == "own_last" ? true : false;
    int remaining = incoming[r];
    for (int start = 0; start < n && remaining > 0; start += kWarp) {
      unsigned int hits = 0;
      for (int lane = 0; lane < kWarp && start + lane < n; ++lane) {
        const int k_i = key[start + lane];
        if (k_i == r || k_i == n + r) hits |= 1u << lane;
      }
      std::vector<int> order;
      for (int lane = 0; lane < kWarp; ++lane) {
        if ((hits >> lane) & 1u) order.push_back(start + lane);
      }
      if (g_plant == "order") order.assign(order.rbegin(), order.rend());
      for (int source : order) {
        if (!own_done && source > r) {
          own();
          own_done = true;
        }
        incoming_term(source);
        --remaining;
      }
    }
    if (!own_done || g_plant == "own_last") own();
  }
}

// ---- inputs

template <typename Dtype>
struct Batch {
  int n, dim;
  std::vector<Dtype> anchor, positive, labels, uniforms;
  bool with_labels;
};

// Few levels make ties and duplicates; a few positives near the centre of the anchors are the hardest negative of
// many rows (hubs); copied rows are duplicates; a wide exponent range makes the order of a sum show in its bits.
template <typename Dtype>
Batch<Dtype> random_batch(std::mt19937_64& rng, int n, int dim, int style) {
  Batch<Dtype> b;
  b.n = n;
  b.dim = dim;
  b.anchor.resize(static_cast<std::size_t>(n) * dim);
  b.positive.resize(b.anchor.size());
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int> level(-3, 3);
  for (std::size_t k = 0; k < b.anchor.size(); ++k) {
    if (style == 0) {
      b.anchor[k] = Dtype(0.25 * level(rng));
      b.positive[k] = Dtype(0.25 * level(rng));
    } else {
      const double magnitude = std::ldexp(unit(rng) + 0.5, static_cast<int>(unit(rng) * 12) - 6);
      b.anchor[k] = Dtype((unit(rng) < 0.5 ? -1 : 1) * magnitude);
      b.positive[k] = Dtype(b.anchor[k] * 0.5 + (unit(rng) - 0.5) * magnitude);
    }
  }
  for (int h = 0; h < std::min(3, n); ++h) {  // hubs: positive h at a tenth of a random anchor
    const int from = static_cast<int>(unit(rng) * n);
    for (int k = 0; k < dim; ++k) b.positive[h * dim + k] = Dtype(0.1) * b.anchor[from * dim + k];
  }
  if (n > 4) {  // a duplicate: positive 4 equals anchor 2
    for (int k = 0; k < dim; ++k) b.positive[4 * dim + k] = b.anchor[2 * dim + k];
  }
  b.with_labels = unit(rng) < 0.4;
  b.labels.resize(n);
  for (int i = 0; i < n; ++i) b.labels[i] = Dtype(static_cast<int>(unit(rng) * 4));
  b.uniforms.resize(n);
  for (int i = 0; i < n; ++i) b.uniforms[i] = Dtype(unit(rng));
  return b;
}

const int kSizes[] = {1, 2, 3, 5, 31, 32, 33, 64, 65, 97, 130};

template <typename Dtype>
HardNetOptions options_for(int variant) {
  HardNetOptions options;
  options.batch_reduce = static_cast<HardNetBatchReduce>(variant % 3);
  options.anchor_swap = (variant / 3) % 2 == 1;
  options.loss_type = static_cast<HardNetLossType>((variant / 6) % 3);
  options.margin = variant % 2 ? 1.0 : 0.5;
  options.duplicate_threshold = variant % 4 == 3 ? 0.0 : 0.008;
  return options;
}

template <typename Dtype>
int run_forward(std::mt19937_64& rng) {
  int cases = 0;
  for (int n : kSizes) {
    for (int variant = 0; variant < 18; ++variant) {
      const HardNetOptions options = options_for<Dtype>(variant);
      const Batch<Dtype> b = random_batch<Dtype>(rng, n, 1 + variant % 9, variant % 2);
      const Dtype* labels = b.with_labels ? b.labels.data() : nullptr;
      MiningBuffers<Dtype> cpu(n), emulated(n);
      std::vector<Dtype> scratch(hardnet_workspace_bytes<Dtype>(n, options, Device::kCpu) / sizeof(Dtype));
      std::vector<Dtype> distance_of_dot(static_cast<std::size_t>(n) * n);
      Dtype loss;
      hardnet_forward_cpu(n, b.dim, b.anchor.data(), b.positive.data(), labels, b.uniforms.data(), options,
                          cpu.view(), scratch.data(), &loss);
      // The CPU left the dot products (MIN and RANDOM) or D (AVERAGE) in dist, and the squared norms in the scratch.
      if (options.batch_reduce != HardNetBatchReduce::kAverage) {  // the GPU's D but for MIN without swap
        for (int i = 0; i < n; ++i) {
          for (int j = 0; j < n; ++j) {
            const Dtype entry = cpu.dist[static_cast<std::size_t>(i) * n + j];
            distance_of_dot[static_cast<std::size_t>(i) * n + j] =
                distance_from_dot(scratch[i], scratch[n + j], entry, static_cast<Dtype>(options.eps));
          }
        }
      }
      if (options.batch_reduce == HardNetBatchReduce::kMin && !options.anchor_swap) {
        emulate_squared_min_rows(n, cpu.dist.data(), scratch.data(), scratch.data() + n, labels,
                                 static_cast<Dtype>(options.eps),
                                 squared_threshold(static_cast<Dtype>(options.duplicate_threshold)),
                                 options, emulated.view());
      } else {
        const bool average_matrix = options.batch_reduce == HardNetBatchReduce::kAverage;
        emulate_mine_rows(n, average_matrix ? cpu.dist.data() : distance_of_dot.data(), labels, b.uniforms.data(),
                          options, emulated.view());
      }
      const bool average = options.batch_reduce == HardNetBatchReduce::kAverage;
      for (int i = 0; i < n; ++i) {
        expect_same("pos_dist", cases, i, emulated.pos_dist[i], cpu.pos_dist[i]);
        expect_same("neg_dist", cases, i, emulated.neg_dist[i], cpu.neg_dist[i]);
        expect_same("neg_index", cases, i, emulated.neg_index[i], cpu.neg_index[i]);
        expect_same("neg_swapped", cases, i, emulated.neg_swapped[i], cpu.neg_swapped[i]);
        expect_same("neg_count", cases, i, emulated.neg_count[i], cpu.neg_count[i]);
        expect_same("dloss_dneg", cases, i, emulated.dloss_dneg[i], cpu.dloss_dneg[i]);
        if (!average) {  // AVERAGE sums its candidates in the warp's order: equal up to rounding only
          expect_same("row_loss", cases, i, emulated.row_loss[i], cpu.row_loss[i]);
          expect_same("dloss_dpos", cases, i, emulated.dloss_dpos[i], cpu.dloss_dpos[i]);
        } else {
          const double tol = sizeof(Dtype) == 4 ? 1e-5 : 1e-13;
          const double scale = 1.0 + std::fabs(static_cast<double>(cpu.row_loss[i]));
          ++g_compared;
          if (std::fabs(static_cast<double>(emulated.row_loss[i]) - cpu.row_loss[i]) > tol * scale) {
            if (++g_mismatches <= 10) std::printf("case %d AVERAGE row_loss[%d] beyond %g\n", cases, i, tol);
          }
        }
      }
      ++cases;
    }
  }
  return cases;
}

// Mining outputs as a forward could leave them, drawn directly: most rows pick one of three hub negatives, some are
// empty, some coefficients are 0, and distances may be 0 (math::safe_div).
template <typename Dtype>
void random_mining(std::mt19937_64& rng, int n, bool anchor_swap, MiningBuffers<Dtype>* m) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  int valid = 0;
  for (int i = 0; i < n; ++i) {
    m->neg_count[i] = unit(rng) < 0.15 ? 0 : 1 + static_cast<int>(unit(rng) * 5);
    int j = unit(rng) < 0.6 ? static_cast<int>(unit(rng) * std::min(n, 3)) : static_cast<int>(unit(rng) * n);
    if (j == i) j = (i + 1) % n;
    m->neg_index[i] = n > 1 && m->neg_count[i] > 0 ? j : -1;
    if (m->neg_index[i] < 0) m->neg_count[i] = 0;
    m->neg_swapped[i] = anchor_swap && m->neg_index[i] >= 0 && unit(rng) < 0.5 ? 1 : 0;
    m->dloss_dpos[i] = unit(rng) < 0.2 ? Dtype(0) : Dtype(unit(rng) * 2 - 0.5);
    m->dloss_dneg[i] = unit(rng) < 0.2 ? Dtype(0) : Dtype(-unit(rng));
    m->pos_dist[i] = unit(rng) < 0.05 ? Dtype(0) : Dtype(0.1 + unit(rng) * 3);
    m->neg_dist[i] = unit(rng) < 0.05 ? Dtype(0) : Dtype(0.1 + unit(rng) * 3);
    if (i == 0 && m->pos_dist[0] == Dtype(0)) m->pos_dist[0] = Dtype(0.5);
    valid += m->neg_count[i] > 0;
  }
  m->valid_rows[0] = valid;
}

template <typename Dtype>
void compare_backward(int c, int n, int dim, const Batch<Dtype>& b, const HardNetOptions& options,
                      MiningBuffers<Dtype>* mining, Dtype loss_weight) {
  const std::size_t elements = static_cast<std::size_t>(n) * dim;
  std::vector<Dtype> cpu_a(elements), cpu_p(elements), emu_a(elements), emu_p(elements);
  std::vector<Dtype> scratch(hardnet_workspace_bytes<Dtype>(n, options, Device::kCpu) / sizeof(Dtype));
  hardnet_backward_cpu(n, dim, b.anchor.data(), b.positive.data(), static_cast<const Dtype*>(nullptr), options, mining->view(), loss_weight,
                       scratch.data(), cpu_a.data(), cpu_p.data());
  emulate_gather_backward(n, dim, b.anchor.data(), b.positive.data(), mining->view(), loss_weight, emu_a.data(),
                          emu_p.data());
  for (std::size_t k = 0; k < elements; ++k) {
    expect_same("anchor_diff", c, static_cast<int>(k), emu_a[k], cpu_a[k]);
    expect_same("positive_diff", c, static_cast<int>(k), emu_p[k], cpu_p[k]);
  }
}

template <typename Dtype>
int run_backward(std::mt19937_64& rng) {
  int cases = 0;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int n : kSizes) {
    for (int variant = 0; variant < 12; ++variant) {
      HardNetOptions options = options_for<Dtype>(variant);
      if (options.batch_reduce == HardNetBatchReduce::kAverage) options.batch_reduce = HardNetBatchReduce::kMin;
      const int dim = 1 + variant % 7 * 6;
      const Batch<Dtype> b = random_batch<Dtype>(rng, n, dim, 1);
      const Dtype loss_weight = Dtype(0.5 + unit(rng) * 3);
      MiningBuffers<Dtype> drawn(n);  // hub-heavy mining drawn directly
      random_mining(rng, n, options.anchor_swap, &drawn);
      compare_backward(cases++, n, dim, b, options, &drawn, loss_weight);
      MiningBuffers<Dtype> mined(n);  // and what the CPU forward mines on the same batch
      std::vector<Dtype> scratch(hardnet_workspace_bytes<Dtype>(n, options, Device::kCpu) / sizeof(Dtype));
      Dtype loss;
      hardnet_forward_cpu(n, dim, b.anchor.data(), b.positive.data(), static_cast<const Dtype*>(nullptr), b.uniforms.data(), options,
                          mined.view(), scratch.data(), &loss);
      compare_backward(cases++, n, dim, b, options, &mined, loss_weight);
    }
  }
  return cases;
}

template <typename Dtype>
int run_policy() {
  const Dtype big = std::sqrt(std::numeric_limits<Dtype>::max());  // |x|^2 = max: 2 (|a|^2 + |p|^2) overflows
  struct Case {
    bool any_bad;
    Dtype max_a, max_p;
    bool want;
  } cases[] = {{false, Dtype(1), Dtype(2), false},
               {true, Dtype(1), Dtype(2), true},
               {false, big * big, Dtype(0), true},
               {false, std::numeric_limits<Dtype>::max() / Dtype(8), std::numeric_limits<Dtype>::max() / Dtype(8),
                false},
               {false, std::numeric_limits<Dtype>::max() / Dtype(3), std::numeric_limits<Dtype>::max() / Dtype(3),
                true}};
  int c = 0;
  for (const Case& k : cases) {
    ++g_compared;
    if (inputs_nonfinite(k.any_bad, k.max_a, k.max_p) != k.want) {
      ++g_mismatches;
      std::printf("policy case %d: got %d\n", c, static_cast<int>(!k.want));
    }
    ++c;
  }
  ++g_compared;  // is_finite
  if (math::is_finite(Dtype(INFINITY)) || math::is_finite(Dtype(NAN)) ||
      !math::is_finite(std::numeric_limits<Dtype>::max())) {
    ++g_mismatches;
    std::printf("is_finite is wrong\n");
  }
  // Non-finite forward: every row empty, pos_dist NaN; the backward then writes NaN everywhere.
  const int n = 5, dim = 3;
  MiningBuffers<Dtype> m(n);
  for (int i = 0; i < n; ++i) write_nonfinite_row(m.view(), i);
  m.valid_rows[0] = 0;
  for (int i = 0; i < n; ++i) {
    ++g_compared;
    if (m.neg_index[i] != -1 || m.neg_count[i] != 0 || m.row_loss[i] != Dtype(0) || !std::isnan(m.pos_dist[i])) {
      ++g_mismatches;
      std::printf("non-finite row %d is not empty\n", i);
    }
  }
  std::vector<Dtype> x(n * dim, Dtype(1)), da(n * dim), dp(n * dim);
  emulate_gather_backward(n, dim, x.data(), x.data(), m.view(), Dtype(1), da.data(), dp.data());
  for (int k = 0; k < n * dim; ++k) {
    ++g_compared;
    if (!std::isnan(da[k]) || !std::isnan(dp[k])) ++g_mismatches;
  }
  return c + 1;
}

template <typename Dtype>
int run(const std::string& check, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  if (check == "forward") return run_forward<Dtype>(rng);
  if (check == "backward") return run_backward<Dtype>(rng);
  if (check == "policy") return run_policy<Dtype>();
  std::fprintf(stderr, "unknown check %s\n", check.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s forward|backward|policy float|double [seed] [plant]\n", argv[0]);
    return 2;
  }
  const std::string check = argv[1], dtype = argv[2];
  const std::uint64_t seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1;
  if (argc > 4) g_plant = argv[4];
  const int cases = dtype == "double" ? run<double>(check, seed) : run<float>(check, seed);
  std::printf("cases=%d compared=%ld mismatches=%ld\n", cases, g_compared, g_mismatches);
  return 0;
}
