// Batch-all mining: every (anchor, positive, negative) of a labelled batch. For one anchor a, the sum of its terms
// l(d_ap, d_an) over its positives p and negatives n, how many are active (l > 0), and the derivative of that sum
// with respect to each distance of its row (weight_row[p] = sum_n dl/dd_ap, weight_row[n] = sum_p dl/dd_an), all in
// O(n) memory: the n^3 terms are never stored. Host and device.
#ifndef CAFFE_MINING_MINERS_BATCH_ALL_HPP_
#define CAFFE_MINING_MINERS_BATCH_ALL_HPP_

#include "caffe_mining/common/host_device.hpp"
#include "caffe_mining/miners/label_masks.hpp"

namespace caffe_mining {

/// What an anchor's terms add up to.
template <typename Dtype>
struct BatchAllRow {
  Dtype loss;         ///< sum of l over the anchor's terms (each positive's terms summed first, then added)
  long long active;   ///< terms with l > 0
};

/// Partial sums of one positive's terms: term n goes to partial n mod kBatchAllPartials, and the partials add up as
/// (s0 + s1) + (s2 + s3). A fixed order every path follows (the CPU sums the partials in the lanes of a vector).
constexpr int kBatchAllPartials = 4;

template <typename Dtype>
CM_HOST_DEVICE Dtype batch_all_partials_sum(const Dtype* partial) {
  return (partial[0] + partial[1]) + (partial[2] + partial[3]);
}

/// Row `anchor` of the distances (dist_row, n values): adds the derivatives into weight_row (n values, zeroed by the
/// caller), positives in increasing p; each positive's loss and slope in kBatchAllPartials partial sums over its
/// negatives in increasing n; weight_row[n] decremented in increasing p. `term` is a TripletRowLoss.
template <typename Dtype, typename Term>
CM_HOST_DEVICE BatchAllRow<Dtype> batch_all_row(const Dtype* dist_row, const Dtype* labels, int n, int anchor,
                                                const Term& term, Dtype* weight_row) {
  BatchAllRow<Dtype> row = {Dtype(0), 0};
  for (int p = 0; p < n; ++p) {
    if (!is_positive_of(labels, anchor, p)) continue;
    const Dtype d_ap = dist_row[p];
    Dtype loss[kBatchAllPartials], slope[kBatchAllPartials];
    for (int q = 0; q < kBatchAllPartials; ++q) loss[q] = slope[q] = Dtype(0);
    for (int k = 0; k < n; ++k) {
      if (!is_negative_of(labels, anchor, k)) continue;
      const auto t = term(d_ap, dist_row[k]);
      loss[k % kBatchAllPartials] += t.loss;
      slope[k % kBatchAllPartials] += t.slope;
      weight_row[k] -= t.slope;
      if (t.loss > Dtype(0)) ++row.active;
    }
    row.loss += batch_all_partials_sum(loss);
    weight_row[p] += batch_all_partials_sum(slope);
  }
  return row;
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_MINERS_BATCH_ALL_HPP_
