// The float row scan of miners/hardest_negative_row.hpp in vector lanes: hardest_negative_row_lanes.inc compiled
// once with SSE2 (4 lanes, every x86-64) and, where the compiler can target it, once with AVX2 (8 lanes), chosen at
// run time. The same operations per column as the scalar scan, so the same decisions.
#include "caffe_mining/miners/hardest_negative_row.hpp"
#include "caffe_mining/common/cpu_lanes.hpp"
#include "caffe_mining/common/float_lanes.hpp"

#include <cstdint>

namespace caffe_mining {
namespace row_miner {

#if defined(__SSE2__)
#define CM_LANES_INC "hardest_negative_row_lanes.inc"
#include "lane_widths.inc"

// AVX2 where it was compiled and common/cpu_lanes.hpp allows it.
bool row_scan_uses_avx2() {
#if defined(CAFFE_MINING_AVX2_LANES)
  return cpu_lanes_allow_avx2();
#else
  return false;
#endif
}

template <>
BlockMinimum<float> scan_row<float>(const SquaredRow<float>& row, int n, float* block_min,
                                    const ColumnScan<float>* cols) {
#if defined(CAFFE_MINING_AVX2_LANES)
  if (row_scan_uses_avx2()) return avx2_lanes::scan_row(row, n, block_min, cols);
#endif
  return sse2_lanes::scan_row(row, n, block_min, cols);
}

template <>
int first_at_most<float>(const SquaredRow<float>& row, int start, int end, float x_bound) {
#if defined(CAFFE_MINING_AVX2_LANES)
  if (row_scan_uses_avx2()) return avx2_lanes::first_at_most_lanes(row, start, end, x_bound);
#endif
  return sse2_lanes::first_at_most_lanes(row, start, end, x_bound);
}
#endif

int row_scan_lanes() {
#if defined(__SSE2__)
  return row_scan_uses_avx2() ? 8 : 4;
#else
  return 1;
#endif
}

}  // namespace row_miner
}  // namespace caffe_mining
