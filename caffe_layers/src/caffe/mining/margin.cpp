// CPU implementation of the margin loss core (see caffe_mining/margin.hpp for the math and the contracts): the
// shared steps of margin.hpp in loops, in the order the GPU's threads and serial sums follow. Where the CPU does the
// same work another way, it gives the same bits: float distances in vector lanes (margin_distance_lanes.inc), the
// backward's pair hinges scattered from the triplets (an integer count: any order) and its gradient sums over the
// non-zero coefficients only (the shared sum skips the zeros), in increasing j as margin_gradient_element.
// The AVX2 lanes hand 32-byte vectors to the kit's element-wise templates (the sampler's exps and logs), which are
// always inlined: no such vector crosses a call, so GCC's note that AVX passes them differently does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#include "caffe_mining/margin.hpp"
#include "caffe_mining/common/cpu_lanes.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace caffe_mining {

namespace {

/// margin_distance(dim, x, i, j, eps) of one pair, its four running sums in the four lanes of one vector (SSE2 on
/// every x86-64; the scalar function elsewhere and for double).
template <typename Dtype>
Dtype pair_distance(int dim, const Dtype* x, int i, int j, Dtype eps) {
  return margin_distance(dim, x, i, j, eps);
}

#if defined(__SSE2__)
template <>
float pair_distance<float>(int dim, const float* x, int i, int j, float eps) {
  const float* a = x + static_cast<std::size_t>(i) * dim;
  const float* b = x + static_cast<std::size_t>(j) * dim;
  const int dim4 = dim & ~3;
  __m128 sum = _mm_setzero_ps();
  for (int k = 0; k < dim4; k += 4) {
    const __m128 diff = _mm_sub_ps(_mm_loadu_ps(a + k), _mm_loadu_ps(b + k));
    sum = _mm_add_ps(sum, _mm_mul_ps(diff, diff));
  }
  float s[4];
  _mm_storeu_ps(s, sum);
  for (int k = dim4; k < dim; ++k) {  // the elements after the last full group of four, in the same sums
    const float diff = a[k] - b[k];
    s[k & 3] = s[k & 3] + diff * diff;
  }
  return math::sqrt((s[0] + s[1]) + (s[2] + s[3]) + eps);
}
#endif

/// out[k] += c (x_r[k] - x_j[k]) for every k, rounded as margin_gradient_element's terms (no contraction); SSE2
/// lanes for float.
template <typename Dtype>
void add_pair_term(int dim, Dtype c, const Dtype* x_r, const Dtype* x_j, Dtype* out) {
  for (int k = 0; k < dim; ++k) out[k] = math::add_rn(out[k], math::mul_rn(c, x_r[k] - x_j[k]));
}

#if defined(__SSE2__)
template <>
void add_pair_term<float>(int dim, float c, const float* x_r, const float* x_j, float* out) {
  const __m128 coefficient = _mm_set1_ps(c);
  int k = 0;
  for (; k + 4 <= dim; k += 4) {
    const __m128 diff = _mm_sub_ps(_mm_loadu_ps(x_r + k), _mm_loadu_ps(x_j + k));
    _mm_storeu_ps(out + k, _mm_add_ps(_mm_loadu_ps(out + k), _mm_mul_ps(coefficient, diff)));
  }
  for (; k < dim; ++k) out[k] = out[k] + c * (x_r[k] - x_j[k]);
}
#endif

#if defined(__SSE2__)
namespace sse2_lanes {
struct V {  // one pair's four running sums per vector
  using F = __m128;
  static constexpr int kPairs = 1;
  static constexpr bool kCombines = false;  // no horizontal add in SSE2: the sums are combined one pair at a time
  static void store_distances(float*, F, F, float) {}
  static F zero() { return _mm_setzero_ps(); }
  static F load_pairs(const float* p, int /*stride*/) { return _mm_loadu_ps(p); }
  static F broadcast4(const float* p) { return _mm_loadu_ps(p); }
  static void store(float* p, F x) { _mm_storeu_ps(p, x); }
  static F add(F a, F b) { return _mm_add_ps(a, b); }
  static F sub(F a, F b) { return _mm_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm_mul_ps(a, b); }
};
#include "margin_distance_lanes.inc"
}  // namespace sse2_lanes

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CAFFE_MINING_MARGIN_AVX2_LANES 1
#pragma GCC push_options
#pragma GCC target("avx2")  // not "fma": no contraction, the same bits as the scalar code
namespace avx2_lanes {
struct V {  // two pairs' four running sums per vector: rows p and p + stride in the low and high halves
  using F = __m256;
  static constexpr int kPairs = 2;
  static constexpr bool kCombines = true;
  // d of pairs 0..3 (pairs 0, 1 in `first`, 2, 3 in `second`) to out[0..3]: two horizontal adds give
  // (s0 + s1) + (s2 + s3), each an IEEE add as the scalar code's, in lanes 0 (pairs 0 | 1) and 1 (pairs 2 | 3).
  static void store_distances(float* out, F first, F second, float eps) {
    const F halves = _mm256_hadd_ps(first, second);
    const F d = _mm256_sqrt_ps(_mm256_add_ps(_mm256_hadd_ps(halves, halves), _mm256_set1_ps(eps)));
    float lanes[8];
    _mm256_storeu_ps(lanes, d);
    out[0] = lanes[0];
    out[1] = lanes[4];
    out[2] = lanes[1];
    out[3] = lanes[5];
  }
  static F zero() { return _mm256_setzero_ps(); }
  static F load_pairs(const float* p, int stride) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(p)), _mm_loadu_ps(p + stride), 1);
  }
  static F broadcast4(const float* p) { return _mm256_broadcast_ps(reinterpret_cast<const __m128*>(p)); }
  static void store(float* p, F x) { _mm256_storeu_ps(p, x); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
};
#include "margin_distance_lanes.inc"

// The DISTANCE_WEIGHTED row's eligible columns j < n - n % 8 (sampler_eligible's rule: another label, and
// double(d) < nonzero_loss_cutoff unless that is <= 0), eight at a time: the lanes' mask picks their indices out of
// a table of left-packed permutations, stored at the list's end (the eight stores past it are overwritten or past
// the count). Returns the count; the caller lists the rest.
int list_eligible(int n, const float* distance_row, const float* labels, float label, double nonzero_loss_cutoff,
                  int* eligible) {
  static const auto table = [] {  // table[mask]: the set bits' positions first, in increasing order
    struct Table { std::int32_t lanes[256][8]; } t{};
    for (int mask = 0; mask < 256; ++mask) {
      int k = 0;
      for (int lane = 0; lane < 8; ++lane) {
        if (mask & (1 << lane)) t.lanes[mask][k++] = lane;
      }
    }
    return t;
  }();
  const bool any_distance = !(nonzero_loss_cutoff > 0.0);
  const __m256 anchor_label = _mm256_set1_ps(label);
  const __m256d cutoff = _mm256_set1_pd(nonzero_loss_cutoff);
  int count = 0;
  for (int j = 0; j + 8 <= n; j += 8) {
    const int other = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(labels + j), anchor_label, _CMP_NEQ_UQ));
    const __m256 d = _mm256_loadu_ps(distance_row + j);
    const int near = any_distance ? 0xff
        : _mm256_movemask_pd(_mm256_cmp_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(d)), cutoff, _CMP_LT_OQ)) |
          (_mm256_movemask_pd(_mm256_cmp_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(d, 1)), cutoff, _CMP_LT_OQ)) << 4);
    const int mask = other & near;
    const __m256i lanes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table.lanes[mask]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(eligible + count), _mm256_add_epi32(lanes, _mm256_set1_epi32(j)));
    count += __builtin_popcount(static_cast<unsigned>(mask));
  }
  return count;
}

// sampler_row_cumulative_listed with its logs and exps in four double lanes.
template <typename Dtype>
int row_cumulative(NegativeSampler sampler, int n, int dim, int anchor, const Dtype* distance_row, const Dtype* labels,
                   double cutoff, double nonzero_loss_cutoff, int listed_end, int listed, double* cumulative,
                   int* eligible, double* total) {
  return sampler_row_cumulative_listed<32>(sampler, n, dim, anchor, distance_row, labels, cutoff,
                                           nonzero_loss_cutoff, listed_end, listed, cumulative, eligible, total);
}
}  // namespace avx2_lanes
#pragma GCC pop_options
#endif
#endif

/// Whether the float distances run in AVX2 lanes: where they were compiled and common/cpu_lanes.hpp allows it.
bool distance_lanes_use_avx2() {
#if defined(CAFFE_MINING_MARGIN_AVX2_LANES)
  return cpu_lanes_allow_avx2();
#else
  return false;
#endif
}

/// The eligible columns that the vector lanes list before sampler_row_cumulative_listed lists the rest: how far
/// (*listed_end) and how many. None without AVX2 or for double.
template <typename Dtype>
int list_eligible_lanes(int /*n*/, const Dtype* /*distance_row*/, const Dtype* /*labels*/, int /*anchor*/,
                        double /*nonzero_loss_cutoff*/, int* eligible, int* listed_end) {
  (void)eligible;
  *listed_end = 0;
  return 0;
}

#if defined(CAFFE_MINING_MARGIN_AVX2_LANES)
template <>
int list_eligible_lanes<float>(int n, const float* distance_row, const float* labels, int anchor,
                               double nonzero_loss_cutoff, int* eligible, int* listed_end) {
  if (!distance_lanes_use_avx2()) {
    *listed_end = 0;
    return 0;
  }
  *listed_end = n - n % 8;
  return avx2_lanes::list_eligible(n, distance_row, labels, labels[anchor], nonzero_loss_cutoff, eligible);
}
#endif

/// sampler_row_cumulative_listed in the widest double lanes the CPU allows (4 with AVX2, else 2).
template <typename Dtype>
int row_cumulative_lanes(NegativeSampler sampler, int n, int dim, int anchor, const Dtype* distance_row,
                         const Dtype* labels, double cutoff, double nonzero_loss_cutoff, int listed_end, int listed,
                         double* cumulative, int* eligible, double* total) {
#if defined(CAFFE_MINING_MARGIN_AVX2_LANES)
  if (distance_lanes_use_avx2()) {
    return avx2_lanes::row_cumulative(sampler, n, dim, anchor, distance_row, labels, cutoff, nonzero_loss_cutoff,
                                      listed_end, listed, cumulative, eligible, total);
  }
#endif
  return sampler_row_cumulative_listed<16>(sampler, n, dim, anchor, distance_row, labels, cutoff, nonzero_loss_cutoff,
                                           listed_end, listed, cumulative, eligible, total);
}

/// The upper triangle of the distance matrix (j >= i; the lower one is its mirror, the same bits).
template <typename Dtype>
void distance_upper_triangle(int n, int dim, const Dtype* x, Dtype eps, Dtype* dist) {
  for (int i = 0; i < n; ++i) {
    for (int j = i; j < n; ++j) dist[static_cast<std::size_t>(i) * n + j] = margin_distance(dim, x, i, j, eps);
  }
}

#if defined(__SSE2__)
template <>
void distance_upper_triangle<float>(int n, int dim, const float* x, float eps, float* dist) {
#if defined(CAFFE_MINING_MARGIN_AVX2_LANES)
  if (distance_lanes_use_avx2()) return avx2_lanes::distance_upper_triangle(n, dim, x, eps, dist);
#endif
  sse2_lanes::distance_upper_triangle(n, dim, x, eps, dist);
}
#endif

/// The full distance matrix: the upper triangle, mirrored in cache-sized tiles. False when a distance is not finite.
template <typename Dtype>
bool distance_matrix(int n, int dim, const Dtype* x, Dtype eps, Dtype* dist) {
  distance_upper_triangle(n, dim, x, eps, dist);
  bool finite = true;
  for (int i = 0; i < n; ++i) {
    const Dtype* row = dist + static_cast<std::size_t>(i) * n;
    bool row_finite = true;
    for (int j = i; j < n; ++j) row_finite &= std::isfinite(row[j]);
    finite = finite && row_finite;
  }
  constexpr int kTile = 16;
  for (int i0 = 0; i0 < n; i0 += kTile) {
    const int i_end = std::min(i0 + kTile, n);
    for (int j0 = i0; j0 < n; j0 += kTile) {
      const int j_end = std::min(j0 + kTile, n);
      for (int j = j0; j < j_end; ++j) {
        Dtype* column = dist + static_cast<std::size_t>(j) * n;
        for (int i = i0; i < std::min(i_end, j); ++i) column[i] = dist[static_cast<std::size_t>(i) * n + j];
      }
    }
  }
  return finite;
}

/// The indices in order of (label, index) into `order`, and for every anchor the start of its label's run in it
/// (`run_begin`) and its number of positives, margin_positive_count's (the run's length less one). Labels are
/// numbers here (margin_find_invalid_label: none is NaN), so equal labels form one run.
template <typename Dtype>
void label_runs(int n, const Dtype* labels, int* order, int* run_begin, int* positives) {
  for (int i = 0; i < n; ++i) order[i] = i;
  std::sort(order, order + n, [labels](int a, int b) { return labels[a] < labels[b] || (labels[a] == labels[b] && a < b); });
  for (int begin = 0, end = 0; begin < n; begin = end) {
    while (end < n && labels[order[end]] == labels[order[begin]]) ++end;
    for (int k = begin; k < end; ++k) {
      run_begin[order[k]] = begin;
      positives[order[k]] = end - begin - 1;
    }
  }
}

template <typename Dtype>
bool all_finite(std::size_t count, const Dtype* x) {
  for (std::size_t k = 0; k < count; ++k) {
    if (!std::isfinite(x[k])) return false;
  }
  return true;
}

}  // namespace

template <typename Dtype>
void margin_forward_cpu(int n, int dim, const Dtype* embedding, const Dtype* labels, const Dtype* beta,
                        const MarginOptions& options, uint64_t iteration, int capacity,
                        const MarginMining<Dtype>& mining, void* workspace, Dtype* loss) {
  const std::size_t rows = static_cast<std::size_t>(n);
  const int betas = options.num_classes > 0 ? options.num_classes : 1;
  Dtype* dist = static_cast<Dtype*>(workspace);
  char* base = static_cast<char*>(workspace);
  double* cumulative = reinterpret_cast<double*>(base + margin_cpu_workspace_offset<Dtype>(n, 1));
  int* eligible = reinterpret_cast<int*>(base + margin_cpu_workspace_offset<Dtype>(n, 2));
  int* order = reinterpret_cast<int*>(base + margin_cpu_workspace_offset<Dtype>(n, 3));
  int* run_begin = reinterpret_cast<int*>(base + margin_cpu_workspace_offset<Dtype>(n, 4));
  bool finite = all_finite(rows * dim, embedding) && all_finite(static_cast<std::size_t>(betas), beta);
  // d_ij and d_ji are the same bits (the squares of x_i - x_j and x_j - x_i are equal): computed once.
  if (finite) finite = distance_matrix(n, dim, embedding, static_cast<Dtype>(options.eps), dist);
  if (!finite) {
    for (int i = 0; i < n; ++i) mining.anchor_count[i] = mining.anchor_offset[i] = 0;
    mining.counts[0] = -1;
    mining.counts[1] = 0;
    *loss = std::numeric_limits<Dtype>::quiet_NaN();
    return;
  }
  label_runs(n, labels, order, run_begin, mining.anchor_count);
  int offset = 0;
  for (int i = 0; i < n; ++i) {
    // margin_anchor_row's count and weights; an anchor without a positive has no triplet whatever its weights.
    const int positives = mining.anchor_count[i];
    double total = 0.0;
    int sum_count = 0;
    if (positives > 0) {
      const Dtype* row = dist + static_cast<std::size_t>(i) * n;
      int listed_end = 0, listed = 0;
      if (options.sampler == NegativeSampler::kDistanceWeighted) {
        listed = list_eligible_lanes(n, row, labels, i, options.nonzero_loss_cutoff, eligible, &listed_end);
      }
      sum_count = row_cumulative_lanes(options.sampler, n, dim, i, row, labels, options.cutoff,
                                       options.nonzero_loss_cutoff, listed_end, listed, cumulative, eligible, &total);
    }
    int count = margin_anchor_triplets(positives, total, options.negatives_per_positive);
    mining.anchor_count[i] = count;
    mining.anchor_offset[i] = offset;
    if (count > 0) {
      if (offset + count > capacity) {  // the caller's capacity is from other labels: never write past it
        count = mining.anchor_count[i] = 0;
      } else {
        const int* columns = options.sampler == NegativeSampler::kUniform ? nullptr : eligible;
        margin_anchor_draws(n, i, dist, labels, cumulative, sum_count, columns, total, order + run_begin[i],
                            positives + 1, options.negatives_per_positive, options.seed, iteration, offset,
                            mining.triplets, mining.pos_dist, mining.neg_dist);
      }
    }
    offset += count;
  }
  mining.counts[0] = offset;
  *loss = margin_loss_value(offset, mining.triplets, mining.pos_dist, mining.neg_dist, beta, labels,
                            options.num_classes, static_cast<Dtype>(options.margin), static_cast<Dtype>(options.nu),
                            &mining.counts[1]);
}

template <typename Dtype>
void margin_backward_cpu(int n, int dim, const Dtype* embedding, const Dtype* labels, const Dtype* beta,
                         const MarginOptions& options, const MarginMining<Dtype>& mining, Dtype loss_weight,
                         void* workspace, Dtype* embedding_diff, Dtype* beta_diff) {
  const std::size_t rows = static_cast<std::size_t>(n);
  const int betas = options.num_classes > 0 ? options.num_classes : 1;
  const int triplet_count = mining.counts[0], active = mining.counts[1];
  const Dtype margin = static_cast<Dtype>(options.margin), nu = static_cast<Dtype>(options.nu);
  if (triplet_count < 0) {  // non-finite input: NaN everywhere
    const Dtype nan = std::numeric_limits<Dtype>::quiet_NaN();
    if (embedding_diff) for (std::size_t k = 0; k < rows * dim; ++k) embedding_diff[k] = nan;
    if (beta_diff) for (int c = 0; c < betas; ++c) beta_diff[c] = nan;
    return;
  }
  const Dtype scale = active > 0 ? loss_weight / static_cast<Dtype>(active) : Dtype(0);
  if (beta_diff) {
    for (int c = 0; c < betas; ++c) {
      beta_diff[c] = active > 0 ? math::mul_rn(margin_beta_sum(c, triplet_count, mining.triplets, mining.pos_dist,
                                                         mining.neg_dist, beta, labels, options.num_classes, margin,
                                                         nu),
                                         scale)
                                : Dtype(0);
    }
  }
  if (!embedding_diff) return;
  if (active == 0) {
    for (std::size_t k = 0; k < rows * dim; ++k) embedding_diff[k] = Dtype(0);
    return;
  }
  // V_rj of margin_pair_hinges, scattered from the triplets: +1 to (a, p) and (p, a) per non-zero positive hinge,
  // -1 to (a, n) and (n, a) per non-zero negative one (never on the diagonal: p, n != a).
  int* hinges = static_cast<int*>(workspace);  // [n*n] (sizeof(int) <= sizeof(Dtype))
  std::memset(hinges, 0, rows * rows * sizeof(int));
  for (int a = 0; a < n; ++a) {
    const Dtype anchor_beta = beta[margin_class_of(labels[a], options.num_classes)];
    const int begin = mining.anchor_offset[a], end = begin + mining.anchor_count[a];
    for (int t = begin; t < end; ++t) {
      const int p = mining.triplets[3 * static_cast<std::size_t>(t) + 1];
      const int q = mining.triplets[3 * static_cast<std::size_t>(t) + 2];
      if (margin_pos_argument(mining.pos_dist[t], anchor_beta, margin) > Dtype(0)) {
        ++hinges[static_cast<std::size_t>(a) * n + p];
        ++hinges[static_cast<std::size_t>(p) * n + a];
      }
      if (margin_neg_argument(mining.neg_dist[t], anchor_beta, margin) > Dtype(0)) {
        --hinges[static_cast<std::size_t>(a) * n + q];
        --hinges[static_cast<std::size_t>(q) * n + a];
      }
    }
  }
  // Row r of dE/dx: sum_j coefficient_rj (x_r - x_j) over the non-zero coefficients, j increasing (each element's
  // sum as margin_gradient_element's, which skips the zeros), all of the row's elements at once.
  const Dtype eps = static_cast<Dtype>(options.eps);
  for (int r = 0; r < n; ++r) {
    Dtype* out = embedding_diff + static_cast<std::size_t>(r) * dim;
    const Dtype* x_r = embedding + static_cast<std::size_t>(r) * dim;
    std::fill(out, out + dim, Dtype(0));
    const int* hinge_row = hinges + static_cast<std::size_t>(r) * n;
    constexpr int kBlock = 16;  // most of a row is 0: whole blocks of zeros are skipped in one test
    for (int j = 0; j < n; ++j) {
      if (j % kBlock == 0 && j + kBlock <= n) {
        int any = 0;
        for (int b = 0; b < kBlock; ++b) any |= hinge_row[j + b];
        if (any == 0) {
          j += kBlock - 1;
          continue;
        }
      }
      if (hinge_row[j] == 0) continue;
      const Dtype c = margin_pair_coefficient(hinge_row[j], scale, pair_distance(dim, embedding, r, j, eps));
      if (c == Dtype(0)) continue;
      add_pair_term(dim, c, x_r, embedding + static_cast<std::size_t>(j) * dim, out);
    }
  }
}

#define CAFFE_MINING_INSTANTIATE_MARGIN(Dtype)                                                                       \
  template void margin_forward_cpu<Dtype>(int, int, const Dtype*, const Dtype*, const Dtype*, const MarginOptions&, \
                                          uint64_t, int, const MarginMining<Dtype>&, void*, Dtype*);                 \
  template void margin_backward_cpu<Dtype>(int, int, const Dtype*, const Dtype*, const Dtype*,                      \
                                           const MarginOptions&, const MarginMining<Dtype>&, Dtype, void*, Dtype*,   \
                                           Dtype*);
CAFFE_MINING_INSTANTIATE_MARGIN(float)
CAFFE_MINING_INSTANTIATE_MARGIN(double)
#undef CAFFE_MINING_INSTANTIATE_MARGIN

}  // namespace caffe_mining
