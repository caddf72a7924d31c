// The rows of each class of a labelled batch, in increasing index (CPU): the batch sorted once by (label, index), so
// a miner visits an anchor's positives (label_p == label_a, p != a; miners/label_masks.hpp) without scanning the n
// rows of its batch for them. Labels are finite class ids held in the features' float type; equal labels (== ,
// so -0 and +0 too) are one class.
#ifndef CAFFE_MINING_MINERS_CLASS_MEMBERS_HPP_
#define CAFFE_MINING_MINERS_CLASS_MEMBERS_HPP_

#include <algorithm>
#include <numeric>

namespace caffe_mining {

/// Row i's class is order[first[i] .. first[i] + size[i]) (i among them), its rows in increasing index.
struct ClassMembers {
  const int* order;
  const int* first;
  const int* size;
};

/// The lists class_members built in `space` (3n ints): order, then first, then size.
inline ClassMembers class_members_in(int n, const int* space) { return {space, space + n, space + 2 * n}; }

/// ClassMembers of the n labels, built in `space` (3n ints): O(n log n).
template <typename Dtype>
ClassMembers class_members(int n, const Dtype* labels, int* space) {
  int* order = space;
  int* first = space + n;
  int* size = space + 2 * n;
  std::iota(order, order + n, 0);
  std::stable_sort(order, order + n, [labels](int a, int b) { return labels[a] < labels[b]; });
  for (int start = 0; start < n;) {
    int end = start + 1;
    while (end < n && labels[order[end]] == labels[order[start]]) ++end;
    for (int k = start; k < end; ++k) {
      first[order[k]] = start;
      size[order[k]] = end - start;
    }
    start = end;
  }
  return class_members_in(n, space);
}

/// An anchor's positives in increasing index, taken a few at a time.
class Positives {
 public:
  Positives(const ClassMembers& members, int anchor)
      : next_(members.order + members.first[anchor]), end_(next_ + members.size[anchor]), anchor_(anchor) {}
  /// Fills out[0 .. k) with the next k <= most positives; 0 when none is left.
  int take(int* out, int most) {
    int k = 0;
    for (; next_ != end_ && k < most; ++next_) {
      if (*next_ != anchor_) out[k++] = *next_;
    }
    return k;
  }

 private:
  const int* next_;
  const int* end_;
  int anchor_;
};

}  // namespace caffe_mining

#endif  // CAFFE_MINING_MINERS_CLASS_MEMBERS_HPP_
