// Measures common/exp_log.hpp (exp_nonpositive, log1p_unit, log_nonnegative): its error in ulp against a wider reference (float: libm's double exp/log1p;
// double: long double expl/log1pl) over a sweep of each domain, and whether a GCC vector of the same inputs gives the
// scalar code's bits in every lane. Prints one line per function and type; tests/test_exp_log.py reads them.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "caffe_mining/common/exp_log.hpp"

namespace {

long double reference_exp(float x) { return exp(static_cast<double>(x)); }
long double reference_exp(double x) { return expl(static_cast<long double>(x)); }
long double reference_log1p(float x) { return log1p(static_cast<double>(x)); }
long double reference_log1p(double x) { return log1pl(static_cast<long double>(x)); }
long double reference_log(float x) { return log(static_cast<double>(x)); }
long double reference_log(double x) { return logl(static_cast<long double>(x)); }

enum class Function { kExp, kLog1p, kLog };

template <typename T>
T under_test(Function f, T x) {
  if (f == Function::kExp) return caffe_mining::math::exp_nonpositive(x);
  if (f == Function::kLog1p) return caffe_mining::math::log1p_unit(x);
  return caffe_mining::math::log_nonnegative(x);
}

// |got - want| in units of the last place of want in S (subnormals: the smallest subnormal).
template <typename S>
double ulp_error(S got, long double want) {
  const S rounded = static_cast<S>(want);
  S spacing = nextafter(fabs(rounded), static_cast<S>(INFINITY)) - fabs(rounded);
  return static_cast<double>(fabsl(static_cast<long double>(got) - want) / spacing);
}

template <typename S>
struct Sweep {
  double worst = 0;
  S worst_at = 0;
  long long count = 0;
  void add(S x, S got, long double want) {
    const double e = ulp_error(got, want);
    ++count;
    if (e > worst || e != e) {
      worst = e;
      worst_at = x;
    }
  }
};

// Inputs: `count` values spread evenly over [low, high] plus the ends, and, for exp, every point near the
// underflow edges and 0.
// Evenly spread (or, with `geometric`, spread evenly in log scale: low > 0) inputs over [low, high].
template <typename S>
void sweep(const char* name, const char* type, S low, S high, long long count, Function function,
           long double (*reference)(S), bool geometric = false) {
  const bool exp_like = function == Function::kExp;
  Sweep<S> result;
  typedef S Vec __attribute__((vector_size(16)));
  constexpr int kLanes = sizeof(Vec) / sizeof(S);
  long long lane_mismatches = 0;
  S batch[kLanes];
  int filled = 0;
  auto check_batch = [&]() {
    Vec v{};
    for (int k = 0; k < kLanes; ++k) v[k] = batch[k % filled];
    Vec out;
    out = under_test(function, v);
    for (int k = 0; k < filled; ++k) {
      const S scalar = under_test(function, batch[k]);
      if (memcmp(&scalar, &out[k], sizeof(S)) != 0) ++lane_mismatches;
    }
    filled = 0;
  };
  auto visit = [&](S x) {
    result.add(x, under_test(function, x), reference(x));
    batch[filled++] = x;
    if (filled == kLanes) check_batch();
  };
  for (long long i = 0; i <= count; ++i) {
    const long double t = static_cast<long double>(i) / count;
    const S x = geometric ? static_cast<S>(expl(logl(low) + (logl(high) - logl(low)) * t))
                          : static_cast<S>(low + (high - low) * t);
    if (x >= low && x <= high) visit(x);
  }
  S edges[] = {low, high};
  for (S e : edges) {
    S x = e;
    for (int k = 0; k < 2000; ++k) {  // consecutive values from each end inwards
      if (x < low || x > high) break;
      visit(x);
      x = e == high ? nextafter(x, low) : nextafter(x, high);
    }
  }
  if (exp_like) {  // where results become subnormal and then 0
    const S edges_exp[] = {static_cast<S>(sizeof(S) == 4 ? -87.3365 : -708.3964),
                           static_cast<S>(sizeof(S) == 4 ? -103.9721 : -744.4401)};
    for (S e : edges_exp) {
      S x = e;
      for (int k = 0; k < 20000; ++k) x = nextafter(x, S(0));
      for (int k = 0; k < 40000; ++k) {
        visit(x);
        x = nextafter(x, -S(INFINITY));
      }
    }
  }
  if (filled > 0) check_batch();
  printf("%s %s worst_ulp=%.4f at=%.9g inputs=%lld lane_mismatches=%lld\n", name, type, result.worst,
         static_cast<double>(result.worst_at), result.count, lane_mismatches);
}

template <typename S>
void run(const char* type) {
  const bool is_float = sizeof(S) == 4;
  sweep<S>("exp", type, is_float ? S(-110) : S(-760), S(0), 4000000, Function::kExp, reference_exp);
  sweep<S>("log1p", type, S(0), S(1), 4000000, Function::kLog1p, reference_log1p);
  // Tiny arguments, where log1p(x) ~ x, down to the subnormals.
  sweep<S>("log1p_tiny", type, is_float ? S(1e-44) : S(1e-320), is_float ? S(1e-6) : S(1e-12), 1000000,
           Function::kLog1p, reference_log1p, true);
  // log: around 1 (where log x is small), the sampler's range (0, 2], and every magnitude, subnormals included.
  sweep<S>("log_near_one", type, S(0.5), S(2), 4000000, Function::kLog, reference_log);
  sweep<S>("log_all", type, is_float ? S(1e-45) : S(5e-324), is_float ? S(3e38) : S(1e308), 4000000,
           Function::kLog, reference_log, true);
}

// log's ends: log 0 = -inf, log inf = inf, NaN for a negative or NaN argument. Returns the number of wrong ones.
template <typename S>
int log_ends() {
  const S zero = caffe_mining::math::log_nonnegative(S(0));
  const S infinity = caffe_mining::math::log_nonnegative(static_cast<S>(INFINITY));
  const S negative = caffe_mining::math::log_nonnegative(S(-0.5));
  const S nan = caffe_mining::math::log_nonnegative(static_cast<S>(NAN));
  return (zero == -static_cast<S>(INFINITY) ? 0 : 1) + (infinity == static_cast<S>(INFINITY) ? 0 : 1) +
         (negative != negative ? 0 : 1) + (nan != nan ? 0 : 1);
}

}  // namespace

int main() {
  run<float>("float");
  run<double>("double");
  printf("log_ends wrong=%d\n", log_ends<float>() + log_ends<double>());
  return 0;
}
