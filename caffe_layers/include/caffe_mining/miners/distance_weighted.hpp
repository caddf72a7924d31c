// Negative sampling of "Sampling Matters in Deep Embedding Learning" (Wu et al. 2017), per anchor row: a weight for
// every other sample of the batch, the row's cumulative weights, and the pick of one negative from a uniform draw.
// Host/device functions: the CPU loop and the GPU's thread per anchor call the same code in the same order.
//
// On the unit sphere in R^D, the distance d between two uniformly spread points has density
//   q(d) ∝ d^(D-2) (1 - d^2/4)^((D-3)/2),
// so drawing negative j of anchor i with weight 1/q(d_ij) spreads the draws evenly over distances instead of
// crowding them near sqrt(2). DISTANCE_WEIGHTED (the paper's sampler):
//   d̂ = max(d, cutoff),
//   log w_ij = -(D-2) log d̂ - ((D-3)/2) log(max(1 - d̂^2/4, kSphereGapFloor)),
//   w_ij = 0 where labels match, j = i, or (nonzero_loss_cutoff > 0) d >= nonzero_loss_cutoff,
//   else exp(log w_ij - max_j log w_ij), the maximum over the row's non-zero entries (so the largest is 1).
// UNIFORM (the paper's baseline): w_ij = 1 for every j of another label.
// Everything in double, whatever the features' type. The floor keeps log(1 - d̂^2/4) finite where rounding (or
// inputs off the unit sphere) give d̂ >= 2; with the default nonzero_loss_cutoff (1.4) it is never reached.
// The logs and exps are the kit's (common/exp_log.hpp, within 2 ulp), and products and sums are rounded one at a
// time: the weights, and so the draws, are the same bits on the CPU (scalar or vector lanes) and on the GPU.
#ifndef CAFFE_MINING_MINERS_DISTANCE_WEIGHTED_HPP_
#define CAFFE_MINING_MINERS_DISTANCE_WEIGHTED_HPP_

#include <math.h>

#include "caffe_mining/common/exp_log.hpp"
#include "caffe_mining/common/host_device.hpp"

namespace caffe_mining {

/// How negatives are drawn; values mirror MarginLossParameter.Sampler in caffe.proto.
enum class NegativeSampler : int { kDistanceWeighted = 0, kUniform = 1 };

/// 1 - d̂^2/4 is never taken below this (its log stays finite: about -27.6).
constexpr double kSphereGapFloor = 1e-12;

/// log(1 / q(d̂)) for dim-dimensional embeddings, d̂ = max(distance, cutoff); element-wise for a vector T of doubles
/// (the CPU's lanes).
template <typename T>
CM_HOST_DEVICE_LANES T distance_weighted_log_weight(T distance, int dim, double cutoff) {
  using math::splat;
  const T clipped = distance > splat<T>(cutoff) ? distance : splat<T>(cutoff);
  T gap = math::add_rn(splat<T>(1.0), -math::mul_rn(math::mul_rn(splat<T>(0.25), clipped), clipped));
  gap = gap > splat<T>(kSphereGapFloor) ? gap : splat<T>(kSphereGapFloor);
  const T distance_term = math::mul_rn(splat<T>(-(dim - 2.0)), math::log_nonnegative(clipped));
  const T gap_term = math::mul_rn(splat<T>(0.5 * (dim - 3.0)), math::log_nonnegative(gap));
  return math::add_rn(distance_term, -gap_term);
}

/// Whether j may be drawn as a negative of anchor i at all (its weight is then > 0): another label, and for
/// DISTANCE_WEIGHTED a distance below nonzero_loss_cutoff (when that is > 0).
template <typename Dtype>
CM_HOST_DEVICE bool sampler_eligible(NegativeSampler sampler, const Dtype* labels, int anchor, int j, double distance,
                                     double nonzero_loss_cutoff) {
  if (labels[j] == labels[anchor]) return false;  // j == anchor included
  return sampler == NegativeSampler::kUniform || !(nonzero_loss_cutoff > 0.0) || distance < nonzero_loss_cutoff;
}

/// Anchor `anchor`'s cumulative weights: cumulative[j] = sum_{k <= j} w_anchor,k (double, n entries), from its row
/// of distances. Returns the row's total (0: no negative can be drawn). DISTANCE_WEIGHTED keeps each eligible log
/// weight in cumulative[j] between its two passes (one log pair per entry; the second pass reads it before it
/// writes the sum there).
template <typename Dtype>
CM_HOST_DEVICE double sampler_row_cumulative(NegativeSampler sampler, int n, int dim, int anchor,
                                             const Dtype* distance_row, const Dtype* labels, double cutoff,
                                             double nonzero_loss_cutoff, double* cumulative) {
  const bool uniform = sampler == NegativeSampler::kUniform;
  double max_log = -HUGE_VAL;
  for (int j = 0; !uniform && j < n; ++j) {  // the row's largest log weight (per row: no row underflows to all 0)
    const double distance = static_cast<double>(distance_row[j]);
    if (sampler_eligible(sampler, labels, anchor, j, distance, nonzero_loss_cutoff)) {
      const double log_weight = distance_weighted_log_weight(distance, dim, cutoff);
      cumulative[j] = log_weight;
      if (log_weight > max_log) max_log = log_weight;
    }
  }
  double total = 0.0;
  for (int j = 0; j < n; ++j) {
    const double distance = static_cast<double>(distance_row[j]);
    if (sampler_eligible(sampler, labels, anchor, j, distance, nonzero_loss_cutoff)) {
      total += uniform ? 1.0 : math::exp_nonpositive(cumulative[j] - max_log);
    }
    cumulative[j] = total;
  }
  return total;
}

/// sampler_row_cumulative's weights, the CPU's way, with no branch on the data where it can. UNIFORM: the whole
/// row, its running sum of ones being the count of eligible columns so far (exact in double); returns n.
/// DISTANCE_WEIGHTED: the eligible columns are listed first (`eligible`, n ints), and the logs, the maximum, the exps
/// and the running sum visit them alone, in increasing j as there; cumulative[e] is the sum at the e-th eligible
/// column (the row's sum changes at those columns only, so sampler_pick on these entries, mapped through
/// `eligible`, picks the column it picks on the whole row). The logs and exps run kLaneBytes of doubles at a time
/// (element-wise: sampler_row_cumulative's bits). A caller that has listed the eligible columns below `listed_end`
/// itself (`listed` of them, in vector lanes) passes those two; else 0, 0. Returns the number of entries; *total is
/// the row's total (0: no negative can be drawn). Host only; always inlined, so that a caller compiled for AVX2
/// compiles these lanes for it.
template <int kLaneBytes, typename Dtype>
inline __attribute__((always_inline)) int sampler_row_cumulative_listed(
    NegativeSampler sampler, int n, int dim, int anchor, const Dtype* distance_row, const Dtype* labels, double cutoff,
    double nonzero_loss_cutoff, int listed_end, int listed, double* cumulative, int* eligible, double* total) {
  // sampler_eligible's rule, with & for && so that the compiler leaves no branch on the data.
  const bool any_distance = sampler == NegativeSampler::kUniform || !(nonzero_loss_cutoff > 0.0);
  const Dtype label = labels[anchor];
  int count = 0;
  if (sampler == NegativeSampler::kUniform) {
    for (int j = 0; j < n; ++j) {
      count += static_cast<int>(!(labels[j] == label));
      cumulative[j] = static_cast<double>(count);
    }
    *total = static_cast<double>(count);
    return n;
  }
  count = listed;
  for (int j = listed_end; j < n; ++j) {
    eligible[count] = j;
    count += static_cast<int>(!(labels[j] == label)) &
             static_cast<int>(any_distance | (static_cast<double>(distance_row[j]) < nonzero_loss_cutoff));
  }
  typedef typename math::Lanes<double, kLaneBytes>::type Lanes;
  constexpr int kWidth = kLaneBytes / static_cast<int>(sizeof(double));
  Lanes largest = math::splat<Lanes>(-HUGE_VAL);
  int e = 0;
  // Two vectors a pass (their series' chains overlap); the last entries one by one.
  for (; e + 2 * kWidth <= count; e += 2 * kWidth) {
    Lanes first = Lanes{}, second = Lanes{};
    for (int k = 0; k < kWidth; ++k) {
      first[k] = static_cast<double>(distance_row[eligible[e + k]]);
      second[k] = static_cast<double>(distance_row[eligible[e + kWidth + k]]);
    }
    first = distance_weighted_log_weight(first, dim, cutoff);
    second = distance_weighted_log_weight(second, dim, cutoff);
    __builtin_memcpy(cumulative + e, &first, sizeof(Lanes));
    __builtin_memcpy(cumulative + e + kWidth, &second, sizeof(Lanes));
    largest = first > largest ? first : largest;
    largest = second > largest ? second : largest;
  }
  double max_log = -HUGE_VAL;
  for (int k = 0; k < kWidth; ++k) max_log = largest[k] > max_log ? largest[k] : max_log;  // a maximum: any order
  for (; e < count; ++e) {
    const double log_weight = distance_weighted_log_weight(static_cast<double>(distance_row[eligible[e]]), dim, cutoff);
    cumulative[e] = log_weight;
    if (log_weight > max_log) max_log = log_weight;
  }
  e = 0;
  for (; e + 2 * kWidth <= count; e += 2 * kWidth) {
    Lanes first, second;
    __builtin_memcpy(&first, cumulative + e, sizeof(Lanes));
    __builtin_memcpy(&second, cumulative + e + kWidth, sizeof(Lanes));
    first = math::exp_nonpositive(first - max_log);
    second = math::exp_nonpositive(second - max_log);
    __builtin_memcpy(cumulative + e, &first, sizeof(Lanes));
    __builtin_memcpy(cumulative + e + kWidth, &second, sizeof(Lanes));
  }
  for (; e < count; ++e) cumulative[e] = math::exp_nonpositive(cumulative[e] - max_log);
  double sum = 0.0;
  for (e = 0; e < count; ++e) {  // the running sum, in increasing j
    sum += cumulative[e];
    cumulative[e] = sum;
  }
  *total = sum;
  return count;
}

/// The negative that a uniform u in [0, 1) draws from a row's cumulative weights (total > 0): the first j with
/// cumulative[j] > u * total. A zero-weight j never qualifies (its cumulative equals its predecessor's).
CM_HOST_DEVICE int sampler_pick(int n, const double* cumulative, double total, double uniform) {
  double target = uniform * total;
  if (!(target < total)) target = ::nextafter(total, 0.0);  // u * total rounded up to the total
  int low = 0, high = n - 1;  // cumulative[n - 1] = total > target: the answer exists
  while (low < high) {
    const int middle = low + (high - low) / 2;
    if (cumulative[middle] > target) {
      high = middle;
    } else {
      low = middle + 1;
    }
  }
  return low;
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_MINERS_DISTANCE_WEIGHTED_HPP_
