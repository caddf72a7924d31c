// A counter-based random generator, Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2,
// 3"): the draw is a pure function of a 64-bit key and a 128-bit counter, so a CPU loop and a GPU thread that name
// the same (key, counter) get the same bits, in any order, with no state to carry between calls or threads.
// Checked against the Random123 known-answer vectors (tests/test_margin_sampling.py).
#ifndef CAFFE_MINING_COMMON_PHILOX_HPP_
#define CAFFE_MINING_COMMON_PHILOX_HPP_

#include <stdint.h>

#include "caffe_mining/common/host_device.hpp"

namespace caffe_mining {

/// Four 32-bit words: a Philox counter or its output.
struct Philox4x32 {
  uint32_t word[4];
};

/// Philox4x32 with 10 rounds of counter under key (k0, k1).
CM_HOST_DEVICE Philox4x32 philox4x32_10(Philox4x32 counter, uint32_t k0, uint32_t k1) {
  const uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;  // the round multipliers
  const uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;  // the key schedule's increments
  for (int round = 0; round < 10; ++round) {
    const uint64_t product0 = static_cast<uint64_t>(kMul0) * counter.word[0];
    const uint64_t product1 = static_cast<uint64_t>(kMul1) * counter.word[2];
    const uint32_t hi0 = static_cast<uint32_t>(product0 >> 32), lo0 = static_cast<uint32_t>(product0);
    const uint32_t hi1 = static_cast<uint32_t>(product1 >> 32), lo1 = static_cast<uint32_t>(product1);
    counter.word[0] = hi1 ^ counter.word[1] ^ k0;
    counter.word[1] = lo1;
    counter.word[2] = hi0 ^ counter.word[3] ^ k1;
    counter.word[3] = lo0;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return counter;
}

/// A double in [0, 1) with 53 random bits (the top 27 of word 0, the top 26 of word 1): every value is k / 2^53.
CM_HOST_DEVICE double philox_uniform53(const Philox4x32& bits) {
  const uint64_t high = bits.word[0] >> 5, low = bits.word[1] >> 6;
  return static_cast<double>((high << 26) | low) * (1.0 / 9007199254740992.0);
}

}  // namespace caffe_mining

#endif  // CAFFE_MINING_COMMON_PHILOX_HPP_
