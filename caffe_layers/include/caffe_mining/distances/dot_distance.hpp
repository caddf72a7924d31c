// Euclidean distances from a GEMM's dot products, and the rules that let a miner compare them on the squared scale.
// Element math of both paths (host and device).
//
//   x(a, p) = max(|a|^2 + |p|^2 - 2 a.p, 0) + eps      D(a, p) = sqrt(x)
//
// The clamp at 0 keeps rounding in |a|^2 + |p|^2 - 2 a.p from giving sqrt of a negative (the authors' HardNet code
// gets NaN there). D = sqrt(x) is correctly rounded (IEEE sqrt on the CPU and, without -use_fast_math, on the
// device) and so non-decreasing in x: every comparison of D against a threshold or against another D can be made on
// x with exact bounds (squared_threshold, largest_with_same_root), and the square root taken only where D is needed.
#ifndef CAFFE_MINING_DISTANCES_DOT_DISTANCE_HPP_
#define CAFFE_MINING_DISTANCES_DOT_DISTANCE_HPP_

#include <math.h>

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/common/math.hpp"

namespace caffe_mining {

/// x = max(|a|^2 + |p|^2 - 2 a.p, 0) + eps, the squared distance from the dot product a.p.
template <typename Dtype>
CM_HOST_DEVICE Dtype squared_distance_from_dot(Dtype sq_norm_a, Dtype sq_norm_p, Dtype dot, Dtype eps) {
  const Dtype sq = sq_norm_a + sq_norm_p - Dtype(2) * dot;
  return (sq > Dtype(0) ? sq : Dtype(0)) + eps;
}

/// D = sqrt(max(|a|^2 + |p|^2 - 2 a.p, 0) + eps): the same operations in the same order as
/// squared_distance_from_dot, then the square root.
template <typename Dtype>
CM_HOST_DEVICE Dtype distance_from_dot(Dtype sq_norm_a, Dtype sq_norm_p, Dtype dot, Dtype eps) {
  const Dtype sq = sq_norm_a + sq_norm_p - Dtype(2) * dot;
  return math::sqrt((sq > Dtype(0) ? sq : Dtype(0)) + eps);
}

/// The smallest x with sqrt(x) >= threshold, so that sqrt(x) < threshold <=> x < it.
template <typename Dtype>
CM_HOST_DEVICE Dtype squared_threshold(Dtype threshold) {
  if (!(threshold > Dtype(0))) return Dtype(0);  // x >= eps > 0: nothing is below
  Dtype x = threshold * threshold;  // within an ulp or two of the bound
  while (math::sqrt(x) < threshold) x = math::next_up(x);
  while (x > Dtype(0) && math::sqrt(math::next_down(x)) >= threshold) x = math::next_down(x);
  return x;
}

/// The largest x whose square root is sqrt(x_min): the x of every entry whose D equals the minimum's D.
template <typename Dtype>
CM_HOST_DEVICE Dtype largest_with_same_root(Dtype x_min) {
  const Dtype root = math::sqrt(x_min);
  Dtype x = x_min;
  while (x < Dtype(INFINITY) && math::sqrt(math::next_up(x)) == root) x = math::next_up(x);
  return x;
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_DISTANCES_DOT_DISTANCE_HPP_
