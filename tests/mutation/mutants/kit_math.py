"""Mutants of the kit's own exponential, log1p and log (common/exp_log.hpp), one per step of its header: the series'
lengths, Cody and Waite's second ln 2 part, the two-step scale of a subnormal result, the underflow to 0, the
reduction of log's argument and its ends, killed by tests/test_exp_log.py's accuracy sweep (and the soft margin's
and the sampler's tests where they reach them)."""
from .mutant import Mutant

EXP_LOG_HPP = "caffe_layers/include/caffe_mining/common/exp_log.hpp"

TEST_FILES = ("tests/test_exp_log.py",)
ACCURACY = ("tests/test_exp_log.py",)

MUTANTS = (
    Mutant("exp_series_short", EXP_LOG_HPP,
           "kMinExponent = -126, kExpTerms = 7,", "kMinExponent = -126, kExpTerms = 5,",
           "exp: e^r's Taylor series to r^7 (float)", ci=True, kill_first=ACCURACY),
    Mutant("log1p_series_short", EXP_LOG_HPP,
           "kExpTerms = 13, kLog1pTerms = 15,", "kExpTerms = 13, kLog1pTerms = 12,",
           "log1p: the odd series to s^31 (double)", kill_first=ACCURACY),
    Mutant("exp_ln2_low_part_dropped", EXP_LOG_HPP,
           "const T r = add_rn(x - mul_rn(n, splat<T>(F::kLn2Hi)), -mul_rn(n, splat<T>(F::kLn2Lo)));",
           "const T r = x - mul_rn(n, splat<T>(F::kLn2Hi));",
           "exp: r = x - n ln2_hi - n ln2_lo", kill_first=ACCURACY),
    Mutant("exp_subnormal_in_one_step", EXP_LOG_HPP,
           "const auto deep = n < splat<T>(S(F::kMinExponent));",
           "const auto deep = n < splat<T>(S(-100000));",
           "exp: a result below the smallest normal is scaled in two steps", kill_first=ACCURACY),
    Mutant("exp_no_underflow_to_zero", EXP_LOG_HPP,
           "  return zero ? splat<T>(S(0)) : value;", "  return value;",
           "exp: below half the smallest subnormal the result is 0", kill_first=ACCURACY),
    Mutant("log_subnormal_unscaled", EXP_LOG_HPP,
           "  k_float = subnormal ? k_float - splat<T>(S(F::kSubnormalShift)) : k_float;\n", "",
           "log: a subnormal x is scaled up, and its exponent down, first", kill_first=ACCURACY),
    Mutant("log_reduced_around_one", EXP_LOG_HPP,
           "static constexpr Bits kSqrtHalfBits = 0x3fe6a09e667f3bcdLL;",
           "static constexpr Bits kSqrtHalfBits = 0x3fe0000000000000LL;",
           "log: m in [sqrt(1/2), sqrt(2)), so |s| <= 0.172 and the series' length suffices (double)",
           kill_first=ACCURACY),
    Mutant("log_of_zero_finite", EXP_LOG_HPP,
           "const T ends = x == splat<T>(S(0)) ? -infinity : (x == infinity ? infinity : value);",
           "const T ends = x == infinity ? infinity : value;",
           "log 0 = -inf", kill_first=ACCURACY),
    Mutant("log_of_negative_finite", EXP_LOG_HPP,
           "  return x >= splat<T>(S(0)) ? ends : infinity - infinity;", "  return ends;",
           "log: NaN for a negative or NaN x (never a finite number)", kill_first=ACCURACY),
)
