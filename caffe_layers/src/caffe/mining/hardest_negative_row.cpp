// The float row scan of miners/hardest_negative_row.hpp in vector lanes: hardest_negative_row_lanes.inc compiled
// once with SSE2 (4 lanes, every x86-64) and, where the compiler can target it, once with AVX2 (8 lanes), chosen at
// run time. The same operations per column as the scalar scan, so the same decisions.
#include "caffe_mining/miners/hardest_negative_row.hpp"
#include "caffe_mining/common/cpu_lanes.hpp"

#include <cstdint>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace caffe_mining {
namespace row_miner {

#if defined(__SSE2__)
namespace sse2_lanes {
struct V {
  using F = __m128;
  using I = __m128i;
  static constexpr int kWidth = 4;
  static F load(const float* p) { return _mm_loadu_ps(p); }
  static void store(float* p, F x) { _mm_storeu_ps(p, x); }
  static void store_int(std::int32_t* p, I x) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), x); }
  static F set1(float x) { return _mm_set1_ps(x); }
  static I set1_int(int x) { return _mm_set1_epi32(x); }
  static F zero() { return _mm_setzero_ps(); }
  static I zero_int() { return _mm_setzero_si128(); }
  static F add(F a, F b) { return _mm_add_ps(a, b); }
  static F sub(F a, F b) { return _mm_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm_mul_ps(a, b); }
  static F min(F a, F b) { return _mm_min_ps(a, b); }
  static F and_(F a, F b) { return _mm_and_ps(a, b); }
  static F or_(F a, F b) { return _mm_or_ps(a, b); }
  static F andnot(F a, F b) { return _mm_andnot_ps(a, b); }  // ~a & b
  static F cmpgt(F a, F b) { return _mm_cmpgt_ps(a, b); }
  static F cmplt(F a, F b) { return _mm_cmplt_ps(a, b); }
  static F cmple(F a, F b) { return _mm_cmple_ps(a, b); }
  static F cmpeq(F a, F b) { return _mm_cmpeq_ps(a, b); }
  static int movemask(F a) { return _mm_movemask_ps(a); }
  static I add_mask(I count, F mask) { return _mm_add_epi32(count, _mm_castps_si128(mask)); }
  static F columns_equal(int j, I i) {  // lanes j..j+3 equal to i
    return _mm_castsi128_ps(_mm_cmpeq_epi32(_mm_add_epi32(_mm_set1_epi32(j), _mm_setr_epi32(0, 1, 2, 3)), i));
  }
};
#include "hardest_negative_row_lanes.inc"
}  // namespace sse2_lanes

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CAFFE_MINING_AVX2_LANES 1
#pragma GCC push_options
#pragma GCC target("avx2")  // not "fma": no contraction, the same bits as the scalar code
namespace avx2_lanes {
struct V {
  using F = __m256;
  using I = __m256i;
  static constexpr int kWidth = 8;
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F x) { _mm256_storeu_ps(p, x); }
  static void store_int(std::int32_t* p, I x) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), x); }
  static F set1(float x) { return _mm256_set1_ps(x); }
  static I set1_int(int x) { return _mm256_set1_epi32(x); }
  static F zero() { return _mm256_setzero_ps(); }
  static I zero_int() { return _mm256_setzero_si256(); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F and_(F a, F b) { return _mm256_and_ps(a, b); }
  static F or_(F a, F b) { return _mm256_or_ps(a, b); }
  static F andnot(F a, F b) { return _mm256_andnot_ps(a, b); }  // ~a & b
  // The predicates of SSE's cmpgt/cmplt/cmple/cmpeq (signalling order for the inequalities, quiet for equality).
  static F cmpgt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OS); }
  static F cmplt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OS); }
  static F cmple(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LE_OS); }
  static F cmpeq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static int movemask(F a) { return _mm256_movemask_ps(a); }
  static I add_mask(I count, F mask) { return _mm256_add_epi32(count, _mm256_castps_si256(mask)); }
  static F columns_equal(int j, I i) {  // lanes j..j+7 equal to i
    const I lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_add_epi32(_mm256_set1_epi32(j), lanes), i));
  }
};
#include "hardest_negative_row_lanes.inc"
}  // namespace avx2_lanes
#pragma GCC pop_options
#endif

// AVX2 where it was compiled and common/cpu_lanes.hpp allows it.
bool row_scan_uses_avx2() {
#if defined(CAFFE_MINING_AVX2_LANES)
  return cpu_lanes_allow_avx2();
#else
  return false;
#endif
}

template <>
BlockMinimum<float> block_minimum<float>(const SquaredRow<float>& row, int start, int end,
                                         const ColumnScan<float>* cols) {
#if defined(CAFFE_MINING_AVX2_LANES)
  if (row_scan_uses_avx2()) return avx2_lanes::scan_block(row, start, end, cols);
#endif
  return sse2_lanes::scan_block(row, start, end, cols);
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
