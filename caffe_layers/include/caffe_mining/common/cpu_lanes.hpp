// Which vector lanes the CPU fast paths may run in (CPU only). Each fast path is compiled for SSE2 and, where the
// compiler can target it, for AVX2; at run time AVX2 is taken where the CPU has it, unless the environment says
// CAFFE_MINING_CPU_LANES=sse2. The variable is read once per process, so the tests run each path in a process of
// its own. Every path gives the same bits: the choice is speed only.
#ifndef CAFFE_MINING_COMMON_CPU_LANES_HPP_
#define CAFFE_MINING_COMMON_CPU_LANES_HPP_

#include <cstdlib>
#include <cstring>

namespace caffe_mining {

/// Whether a fast path's AVX2 build may run: the CPU has AVX2 and CAFFE_MINING_CPU_LANES is not "sse2".
inline bool cpu_lanes_allow_avx2() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool avx2 = [] {
    const char* forced = std::getenv("CAFFE_MINING_CPU_LANES");
    return __builtin_cpu_supports("avx2") && !(forced != nullptr && std::strcmp(forced, "sse2") == 0);
  }();
  return avx2;
#else
  return false;
#endif
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_COMMON_CPU_LANES_HPP_
