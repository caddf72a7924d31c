// Baseline: MiningContrastiveLoss with the selection the original mining layer (seed 000) uses, two sorted
// multimaps (similar and dissimilar pairs, each keyed by cost, hardest first) walked alternately. The per-pair math
// is the core's (contrastive_cost, contrastive_diff_factor), so only the selection differs from the core, whose
// selection is two std::nth_element calls. Same result as the core: equal costs keep insertion (= index) order in a
// multimap, the core breaks ties by the lower index too, and the loss is summed in index order as the core does.
#include <cblas.h>

#include <cstddef>
#include <functional>
#include <map>
#include <vector>

#include "caffe_mining/contrastive_mining.hpp"

namespace {

struct MultimapBuffers {
  int n, dim;
  std::vector<float> diff, dist_sq;
  std::vector<int> picked;

  MultimapBuffers(int rows, int columns)
      : n(rows), dim(columns), diff(static_cast<std::size_t>(rows) * columns), dist_sq(rows), picked(rows) {}
};

typedef std::multimap<float, int, std::greater<float> > HardestFirst;

}  // namespace

extern "C" {

void* bench_multimap_create(int n, int dim) { return new MultimapBuffers(n, dim); }
void bench_multimap_destroy(void* buffers) { delete static_cast<MultimapBuffers*>(buffers); }

/// Forward (distances, costs, multimap selection, loss) then backward; returns the loss.
float bench_multimap_forward_backward(void* handle, const float* a, const float* b, const float* sim, float margin,
                                      int mining_ratio, float* grad_a, float* grad_b) {
  MultimapBuffers& buf = *static_cast<MultimapBuffers*>(handle);
  const int n = buf.n, dim = buf.dim;
  HardestFirst similar, dissimilar;  // built each iteration, as the original layer does
  for (int i = 0; i < n; ++i) {
    const std::size_t row = static_cast<std::size_t>(i) * dim;
    for (int k = 0; k < dim; ++k) buf.diff[row + k] = a[row + k] - b[row + k];
    buf.dist_sq[i] = cblas_sdot(dim, &buf.diff[row], 1, &buf.diff[row], 1);
    const bool is_similar = sim[i] != 0.0f;
    const float cost = caffe_mining::contrastive_cost(buf.dist_sq[i], is_similar, margin, false);
    (is_similar ? similar : dissimilar).insert(HardestFirst::value_type(cost, i));
    buf.picked[i] = 0;
  }

  // Alternately the hardest remaining similar and dissimilar pair, starting with a similar one; a kind that runs
  // out leaves the rest to the other.
  const int num_picked = caffe_mining::num_picked_pairs(n, mining_ratio);
  HardestFirst::const_iterator next_similar = similar.begin(), next_dissimilar = dissimilar.begin();
  for (int pick = 0; pick < num_picked; ++pick) {
    const bool similar_turn = pick % 2 == 0;
    const bool take_similar = next_similar != similar.end() && (similar_turn || next_dissimilar == dissimilar.end());
    HardestFirst::const_iterator& next = take_similar ? next_similar : next_dissimilar;
    buf.picked[next->second] = 1;
    ++next;
  }

  float loss = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (buf.picked[i]) loss += caffe_mining::contrastive_cost(buf.dist_sq[i], sim[i] != 0.0f, margin, false);
  }
  loss = num_picked > 0 ? loss / static_cast<float>(num_picked) / 2.0f : 0.0f;

  const float alpha = num_picked > 0 ? 1.0f / static_cast<float>(num_picked) : 0.0f;
  for (int i = 0; i < n; ++i) {
    const float factor =
        buf.picked[i] ? caffe_mining::contrastive_diff_factor(buf.dist_sq[i], sim[i] != 0.0f, margin, false, alpha)
                      : 0.0f;
    const std::size_t row = static_cast<std::size_t>(i) * dim;
    for (int k = 0; k < dim; ++k) {
      grad_a[row + k] = factor * buf.diff[row + k];
      grad_b[row + k] = -factor * buf.diff[row + k];
    }
  }
  return loss;
}

}  // extern "C"
