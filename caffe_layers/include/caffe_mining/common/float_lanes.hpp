// Float vector lanes for the CPU fast paths (CPU only; never included by a .cu): `lanes::sse2::V` (4 lanes, every
// x86-64) and, where GCC can target it, `lanes::avx2::V` (8 lanes, compiled under `#pragma GCC target("avx2")`,
// without FMA so that no product and sum is contracted). A fast path is written once over V in an .inc file that
// its .cpp compiles once per instruction set through src/caffe/mining/lane_widths.inc, and picks at run time with
// cpu_lanes_allow_avx2(). Each V operation is the IEEE operation of the scalar code, lane by lane (the comparisons
// keep SSE's predicates, NaN included), so every width gives the scalar path's bits.
#ifndef CAFFE_MINING_COMMON_FLOAT_LANES_HPP_
#define CAFFE_MINING_COMMON_FLOAT_LANES_HPP_

#if defined(__SSE2__)
#include <immintrin.h>

#include <cstdint>

// A fast path's small steps over V: always inlined, since a call passes their vectors through memory.
#if defined(__GNUC__)
#define CM_LANE_STEP inline __attribute__((always_inline))
#else
#define CM_LANE_STEP inline
#endif

namespace caffe_mining {
namespace lanes {

namespace sse2 {
struct V {
  using F = __m128;
  using I = __m128i;
  static constexpr int kWidth = 4;
  static F load(const float* p) { return _mm_loadu_ps(p); }
  static I load_int(const std::int32_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  static void store(float* p, F x) { _mm_storeu_ps(p, x); }
  static void store_int(std::int32_t* p, I x) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), x); }
  static F set1(float x) { return _mm_set1_ps(x); }
  static I set1_int(int x) { return _mm_set1_epi32(x); }
  static F zero() { return _mm_setzero_ps(); }
  static I zero_int() { return _mm_setzero_si128(); }
  static F all_ones() { return _mm_castsi128_ps(_mm_set1_epi32(-1)); }
  static I iota(int start) { return _mm_add_epi32(_mm_set1_epi32(start), _mm_setr_epi32(0, 1, 2, 3)); }
  static F to_float(I x) { return _mm_cvtepi32_ps(x); }
  static F add(F a, F b) { return _mm_add_ps(a, b); }
  static F sub(F a, F b) { return _mm_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm_mul_ps(a, b); }
  static F div(F a, F b) { return _mm_div_ps(a, b); }
  static F sqrt(F a) { return _mm_sqrt_ps(a); }
  static F min(F a, F b) { return _mm_min_ps(a, b); }
  static F and_(F a, F b) { return _mm_and_ps(a, b); }
  static F or_(F a, F b) { return _mm_or_ps(a, b); }
  static F xor_(F a, F b) { return _mm_xor_ps(a, b); }
  static F andnot(F a, F b) { return _mm_andnot_ps(a, b); }  // ~a & b
  static F select(F mask, F if_set, F if_clear) { return or_(and_(mask, if_set), andnot(mask, if_clear)); }
  static F cmpgt(F a, F b) { return _mm_cmpgt_ps(a, b); }
  static F cmplt(F a, F b) { return _mm_cmplt_ps(a, b); }
  static F cmple(F a, F b) { return _mm_cmple_ps(a, b); }
  static F cmpnlt(F a, F b) { return _mm_cmpnlt_ps(a, b); }  // !(a < b): true where either is NaN
  static F cmpeq(F a, F b) { return _mm_cmpeq_ps(a, b); }
  static F cmpneq(F a, F b) { return _mm_cmpneq_ps(a, b); }  // true where either is NaN
  static F cmpeq_int(I a, I b) { return _mm_castsi128_ps(_mm_cmpeq_epi32(a, b)); }
  static int movemask(F a) { return _mm_movemask_ps(a); }
  static I add_mask(I count, F mask) { return _mm_add_epi32(count, _mm_castps_si128(mask)); }
  static F columns_equal(int j, I i) { return cmpeq_int(iota(j), i); }  // lanes j..j+3 equal to i
  // The smallest lane, for lanes holding no NaN (then min is exact and its order does not matter).
  static CM_LANE_STEP float min_of_lanes(F a) {
    const F half = _mm_min_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_min_ss(half, _mm_shuffle_ps(half, half, 1)));
  }
  static CM_LANE_STEP void transpose(const F* rows, F* out) {  // rows[k] lane m becomes out[m] lane k
    F r0 = rows[0], r1 = rows[1], r2 = rows[2], r3 = rows[3];
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    out[0] = r0, out[1] = r1, out[2] = r2, out[3] = r3;
  }
  static CM_LANE_STEP void transpose(F* rows) { transpose(rows, rows); }
};
}  // namespace sse2

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CAFFE_MINING_AVX2_LANES 1
#pragma GCC push_options
#pragma GCC target("avx2")  // not "fma": no contraction, the same bits as the scalar code
namespace avx2 {
struct V {
  using F = __m256;
  using I = __m256i;
  static constexpr int kWidth = 8;
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static I load_int(const std::int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store(float* p, F x) { _mm256_storeu_ps(p, x); }
  static void store_int(std::int32_t* p, I x) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), x); }
  static F set1(float x) { return _mm256_set1_ps(x); }
  static I set1_int(int x) { return _mm256_set1_epi32(x); }
  static F zero() { return _mm256_setzero_ps(); }
  static I zero_int() { return _mm256_setzero_si256(); }
  static F all_ones() { return _mm256_castsi256_ps(_mm256_set1_epi32(-1)); }
  static I iota(int start) {
    return _mm256_add_epi32(_mm256_set1_epi32(start), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static F to_float(I x) { return _mm256_cvtepi32_ps(x); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F sqrt(F a) { return _mm256_sqrt_ps(a); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F and_(F a, F b) { return _mm256_and_ps(a, b); }
  static F or_(F a, F b) { return _mm256_or_ps(a, b); }
  static F xor_(F a, F b) { return _mm256_xor_ps(a, b); }
  static F andnot(F a, F b) { return _mm256_andnot_ps(a, b); }  // ~a & b
  // `mask` lanes all ones or all zeros (a comparison's), so blendv's sign-bit choice is the bitwise select.
  static F select(F mask, F if_set, F if_clear) { return _mm256_blendv_ps(if_clear, if_set, mask); }
  // The predicates of SSE's comparisons: signalling order for the inequalities, quiet for (in)equality; the
  // negated ones unordered (true where either is NaN), as _mm_cmpnlt_ps and _mm_cmpneq_ps.
  static F cmpgt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OS); }
  static F cmplt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OS); }
  static F cmple(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LE_OS); }
  static F cmpnlt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_NLT_US); }
  static F cmpeq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static F cmpneq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_NEQ_UQ); }
  static F cmpeq_int(I a, I b) { return _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, b)); }
  static int movemask(F a) { return _mm256_movemask_ps(a); }
  static I add_mask(I count, F mask) { return _mm256_add_epi32(count, _mm256_castps_si256(mask)); }
  static F columns_equal(int j, I i) { return cmpeq_int(iota(j), i); }  // lanes j..j+7 equal to i
  static CM_LANE_STEP float min_of_lanes(F a) {  // as SSE2's, on the smaller of the two halves
    return sse2::V::min_of_lanes(_mm_min_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1)));
  }
  static CM_LANE_STEP void transpose(const F* rows, F* out) {  // rows[k] lane m becomes out[m] lane k
    const F t0 = _mm256_unpacklo_ps(rows[0], rows[1]), t1 = _mm256_unpackhi_ps(rows[0], rows[1]);
    const F t2 = _mm256_unpacklo_ps(rows[2], rows[3]), t3 = _mm256_unpackhi_ps(rows[2], rows[3]);
    const F t4 = _mm256_unpacklo_ps(rows[4], rows[5]), t5 = _mm256_unpackhi_ps(rows[4], rows[5]);
    const F t6 = _mm256_unpacklo_ps(rows[6], rows[7]), t7 = _mm256_unpackhi_ps(rows[6], rows[7]);
    const F s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const F s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const F s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const F s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    out[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    out[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    out[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    out[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    out[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    out[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    out[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    out[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
  }
  static CM_LANE_STEP void transpose(F* rows) { transpose(rows, rows); }
};
}  // namespace avx2
#pragma GCC pop_options
#endif

}  // namespace lanes
}  // namespace caffe_mining

#endif  // defined(__SSE2__)
#endif  // CAFFE_MINING_COMMON_FLOAT_LANES_HPP_
