// TripletLoss's argument checks, shared by its CPU and CUDA bindings (triplet.cpp, triplet_cuda.cpp).
#ifndef CAFFE_MINING_PYTHON_BINDINGS_TRIPLET_CHECKS_HPP_
#define CAFFE_MINING_PYTHON_BINDINGS_TRIPLET_CHECKS_HPP_

#include <cctype>
#include <cstdint>
#include <string>
#include <vector>

#include "_binding_checks.hpp"
#include "caffe_mining/triplet.hpp"

namespace caffe_mining_bindings {

inline caffe_mining::TripletMiner parse_triplet_mining(std::string name) {
  for (auto& c : name) c = static_cast<char>(toupper(c));
  if (name == "BATCH_HARD") return caffe_mining::TripletMiner::kBatchHard;
  if (name == "BATCH_ALL") return caffe_mining::TripletMiner::kBatchAll;
  if (name == "SEMI_HARD") return caffe_mining::TripletMiner::kSemiHard;
  throw py::value_error("mining must be one of BATCH_HARD, BATCH_ALL, SEMI_HARD. Got: '" + name + "'");
}

inline caffe_mining::TripletOptions triplet_options(double margin, bool soft_margin, bool squared,
                                                    const std::string& mining, double eps) {
  caffe_mining::TripletOptions options;
  options.margin = margin;
  options.soft_margin = soft_margin;
  options.squared = squared;
  options.mining = parse_triplet_mining(mining);
  options.eps = eps;
  return options;
}

inline void check_triplet_rows(int n) {
  if (n > caffe_mining::triplet_max_rows()) {
    throw py::value_error("TripletLoss takes at most N = " + std::to_string(caffe_mining::triplet_max_rows()) +
                          " rows. Got: N = " + std::to_string(n));
  }
}

/// TripletLoss labels as dense class ids 0..C-1 in T (equality kept, so float32 never merges two large ids); they
/// must be finite integer values.
template <typename T>
CArray<T> triplet_class_ids(const py::object& labels_in, int n) {
  const CArray<double> given = per_row_values<double>(labels_in, "labels", n);
  const int invalid = caffe_mining::triplet_find_invalid_label(given.data(), n);
  if (invalid >= 0) {
    throw py::value_error("labels must be finite integer class ids. Got: labels[" + std::to_string(invalid) +
                          "] = " + caffe_mining::format_value(given.data()[invalid]));
  }
  return dense_class_ids<T>(labels_in, n);
}

/// The mined triplets as rows (anchor, positive, negative): BATCH_HARD one per anchor, SEMI_HARD one per ordered
/// positive pair in increasing (a, p); -1 where none was mined; BATCH_ALL none. From host copies of the decisions.
template <typename T>
std::vector<int64_t> triplet_rows(caffe_mining::TripletMiner miner, int n, const T* labels, const int* positive,
                                  const int* negative, const int* pair_negative) {
  std::vector<int64_t> rows;
  if (miner == caffe_mining::TripletMiner::kBatchHard) {
    for (int a = 0; a < n; ++a) rows.insert(rows.end(), {a, positive[a], negative[a]});
  } else if (miner == caffe_mining::TripletMiner::kSemiHard) {
    for (int a = 0; a < n; ++a) {
      for (int p = 0; p < n; ++p) {
        if (caffe_mining::is_positive_of(labels, a, p)) {
          rows.insert(rows.end(), {a, p, pair_negative[static_cast<std::size_t>(a) * n + p]});
        }
      }
    }
  }
  return rows;
}

}  // namespace caffe_mining_bindings

#endif  // CAFFE_MINING_PYTHON_BINDINGS_TRIPLET_CHECKS_HPP_
