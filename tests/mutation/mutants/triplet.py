"""TripletLoss's mutants, one per rule of its header and its miners (miners/*.hpp: masks, batch-hard and semi-hard
choices and ties, batch-all's active count and weights; the row loss's kink and soft slope; the weights' sign and
symmetry, the means, the mirrored distances, the overflow rule, and the CUDA steps' layout; its CPU lane scans' ties
and strict thresholds), killed by tests/test_triplet.py, tests/test_triplet_cpu_scans.py and the emulation."""
from .mutant import Mutant

TRIPLET_HPP = "caffe_layers/include/caffe_mining/triplet.hpp"
TRIPLET_CPP = "caffe_layers/src/caffe/mining/triplet.cpp"
TRIPLET_LANES = "caffe_layers/src/caffe/mining/triplet_lanes.inc"
CLASS_MEMBERS_HPP = "caffe_layers/include/caffe_mining/miners/class_members.hpp"
TRIPLET_ROW_LOSS_HPP = "caffe_layers/include/caffe_mining/losses/triplet_row_loss.hpp"
LABEL_MASKS_HPP = "caffe_layers/include/caffe_mining/miners/label_masks.hpp"
BATCH_HARD_HPP = "caffe_layers/include/caffe_mining/miners/batch_hard.hpp"
SEMI_HARD_HPP = "caffe_layers/include/caffe_mining/miners/semi_hard.hpp"
BATCH_ALL_HPP = "caffe_layers/include/caffe_mining/miners/batch_all.hpp"
TRIPLET_GPU_STEPS_HPP = "caffe_layers/include/caffe_mining/triplet_gpu_steps.hpp"

# Its own test files, tried after the shared ones (mutant.TEST_FILES).
TEST_FILES = ("tests/test_triplet_gpu_emulation.py", "tests/test_triplet.py", "tests/test_triplet_cpu_scans.py")
GPU_EMULATION = ("tests/test_triplet_gpu_emulation.py",)
TRIPLET = ("tests/test_triplet.py",)
TRIPLET_SCANS = ("tests/test_triplet_cpu_scans.py", "tests/test_triplet.py")

MUTANTS = (
    # ---- TripletLoss: label masks, miners, row loss (miners/*.hpp, losses/triplet_row_loss.hpp) --------------------
    Mutant("triplet_positive_includes_anchor", LABEL_MASKS_HPP,
           "return j != anchor && labels[j] == labels[anchor];", "return labels[j] == labels[anchor];",
           "positives of anchor a: j != a with the same label", ci=True, kill_first=TRIPLET),
    Mutant("batch_hard_positive_by_min", BATCH_HARD_HPP,
           "d > dist_row[pick.positive]", "d < dist_row[pick.positive]",
           "BATCH_HARD: the farthest positive", ci=True, kill_first=TRIPLET),
    Mutant("batch_hard_positive_tie_high", BATCH_HARD_HPP,
           "d > dist_row[pick.positive]", "d >= dist_row[pick.positive]",
           "BATCH_HARD: ties go to the lowest index (positive)", kill_first=TRIPLET),
    Mutant("batch_hard_negative_tie_high", BATCH_HARD_HPP,
           "d < dist_row[pick.negative]", "d <= dist_row[pick.negative]",
           "BATCH_HARD: ties go to the lowest index (negative)", kill_first=TRIPLET),
    Mutant("semi_hard_fallback_hardest", SEMI_HARD_HPP,
           "d > dist_row[farthest]) farthest = j;", "d < dist_row[farthest]) farthest = j;",
           "SEMI_HARD: with no negative beyond d_ap, the farthest negative", ci=True, kill_first=TRIPLET),
    Mutant("semi_hard_beyond_inclusive", SEMI_HARD_HPP,
           "if (d > d_ap &&", "if (d >= d_ap &&",
           "SEMI_HARD: a negative counts as beyond when d_an > d_ap, strictly", kill_first=TRIPLET),
    Mutant("semi_hard_closest_tie_high", SEMI_HARD_HPP,
           "d < dist_row[closest_beyond]", "d <= dist_row[closest_beyond]",
           "SEMI_HARD: ties go to the lowest index", kill_first=TRIPLET),
    Mutant("batch_all_mean_over_all_terms", BATCH_ALL_HPP,
           "if (t.loss > Dtype(0)) ++row.active;", "++row.active;",
           "BATCH_ALL: E = sum l / (number of terms with l > 0)", ci=True, kill_first=TRIPLET),
    Mutant("batch_all_positive_weight_dropped", BATCH_ALL_HPP,
           "    weight_row[p] += batch_all_partials_sum(slope);\n", "",
           "BATCH_ALL gradient: d/dd_ap of every term", kill_first=TRIPLET),
    Mutant("triplet_hinge_slope_at_kink", TRIPLET_ROW_LOSS_HPP,
           "term.slope = hinge > Dtype(0) ? Dtype(1) : Dtype(0);",
           "term.slope = hinge >= Dtype(0) ? Dtype(1) : Dtype(0);",
           "hinge derivative 0 at the kink", ci=True, kill_first=TRIPLET),
    Mutant("triplet_soft_slope_wrong_branch", TRIPLET_ROW_LOSS_HPP,
           "term.slope = z >= Dtype(0) ? Dtype(1) / (Dtype(1) + e) : e / (Dtype(1) + e);",
           "term.slope = z >= Dtype(0) ? e / (Dtype(1) + e) : Dtype(1) / (Dtype(1) + e);",
           "soft margin: dl/dd_ap = sigmoid(d_ap - d_an)", kill_first=TRIPLET),
    # ---- TripletLoss: per-anchor step, gradient weights (triplet.hpp) and the CPU path (triplet.cpp) -------------
    Mutant("batch_hard_negative_weight_sign", TRIPLET_HPP,
           "weight_row[pick.negative] = -t.slope;", "weight_row[pick.negative] = t.slope;",
           "dl/dd_an = -dl/dd_ap", ci=True, kill_first=TRIPLET),
    Mutant("triplet_gradient_not_symmetrized", TRIPLET_HPP,
           "scale * (weight[ij] + weight[ji])", "scale * weight[ij]",
           "D_ij depends on x_i and x_j: S = V + V^T", kill_first=TRIPLET),
    Mutant("triplet_squared_factor", TRIPLET_HPP,
           "if (squared) return Dtype(2);", "if (squared) return Dtype(1);",
           "squared: dD/dx_i = 2 (x_i - x_j)", kill_first=TRIPLET),
    Mutant("triplet_mean_over_n", TRIPLET_CPP,
           "*loss = terms > 0 ? loss_sum / static_cast<Dtype>(terms) : Dtype(0);",
           "*loss = terms > 0 ? loss_sum / static_cast<Dtype>(n) : Dtype(0);",
           "E is the mean over the terms that count", ci=True, kill_first=TRIPLET),
    Mutant("triplet_backward_scale_over_n", TRIPLET_CPP,
           "const Dtype scale = loss_weight / static_cast<Dtype>(terms);",
           "const Dtype scale = loss_weight / static_cast<Dtype>(n);",
           "the backward is the gradient of the mean over the terms", kill_first=TRIPLET),
    Mutant("triplet_distance_not_mirrored", TRIPLET_CPP,
           "        for (int i = i0; i < end; ++i) row[i] = tile[j - j0][i - i0];\n", "",
           "D is symmetric: D_ji is D_ij", kill_first=TRIPLET),
    Mutant("triplet_overflow_bound_dropped", TRIPLET_CPP,
           "return !(Dtype(4) * largest <= kMax);", "return false;",
           "non-finite rule: 4 max |x|^2 not finite gives NaN", kill_first=TRIPLET),
    # ---- TripletLoss: the CPU's lane scans, BATCH_ALL hinge lanes and sparse S (triplet.cpp) -------------------
    Mutant("triplet_cpu_lane_tie_high", TRIPLET_LANES,
           "if (better || (best[k] == *value && lane_index < pick)) {",
           "if (better || (best[k] == *value && lane_index > pick)) {",
           "CPU lane scans: equal distances in different lanes go to the lowest index", ci=True,
           kill_first=TRIPLET_SCANS),
    Mutant("class_members_include_the_anchor", CLASS_MEMBERS_HPP,
           "if (*next_ != anchor_) out[k++] = *next_;", "out[k++] = *next_;",
           "positive of anchor a: j != a with label_j == label_a (the CPU's class lists)", ci=True,
           kill_first=TRIPLET),
    Mutant("class_members_unstable_order", CLASS_MEMBERS_HPP,
           "std::stable_sort(order, order + n,", "std::sort(order, order + n,",
           "the CPU visits an anchor's positives in increasing index (its sums' order)", kill_first=TRIPLET_SCANS),
    Mutant("triplet_cpu_batch_hard_positive_tie_high", TRIPLET_LANES,
           "if (positive < 0 || dist_row[p] > dist_row[positive]) positive = p;",
           "if (positive < 0 || dist_row[p] >= dist_row[positive]) positive = p;",
           "BATCH_HARD: equal farthest positives go to the lowest index (CPU)", kill_first=TRIPLET_SCANS),
    Mutant("triplet_cpu_tail_tie_high", TRIPLET_LANES,
           "if (is_negative_of(labels, anchor, j) && (pick < 0 || d < value)) {",
           "if (is_negative_of(labels, anchor, j) && (pick < 0 || d <= value)) {",
           "CPU lane scans: a tail row wins only with a strictly better distance", kill_first=TRIPLET_SCANS),
    Mutant("triplet_cpu_semi_hard_beyond_inclusive", TRIPLET_LANES,
           "const Vec candidate = (negative & (d > threshold[g])) ? d : kInf - Vec{};",
           "const Vec candidate = (negative & (d >= threshold[g])) ? d : kInf - Vec{};",
           "CPU SEMI_HARD: beyond means d_an > d_ap, strictly", kill_first=TRIPLET_SCANS),
    Mutant("triplet_cpu_batch_all_kink_counts", TRIPLET_LANES,
           "const auto open = (hinge > Dtype(0)) & (y != label);",
           "const auto open = (hinge >= Dtype(0)) & (y != label);",
           "CPU BATCH_ALL: a term exactly at the kink (m + d_ap = d_an) is not active", kill_first=TRIPLET_SCANS),
    Mutant("triplet_cpu_dense_s_unsymmetrized", TRIPLET_LANES,
           "const Vec v = scale * (w + w_t);", "const Vec v = scale * w;",
           "CPU dense S (BATCH_ALL): S = V + V^T", kill_first=TRIPLET_SCANS),
    Mutant("triplet_cpu_batch_all_second_positive_unweighted", TRIPLET_LANES,
           "        w -= __builtin_shufflevector(step, step, 4, 5, 6, 7);\n", "",
           "CPU BATCH_ALL (two positives a pass): each open term takes 1 from its negative's weight",
           kill_first=TRIPLET),
    Mutant("triplet_cpu_sparse_pick_unmirrored", TRIPLET_CPP,
           "    columns[next[j]++] = a;\n", "",
           "CPU sparse S (BATCH_HARD, SEMI_HARD): S = V + V^T, a pick (a, j) is also entry (j, a)", ci=True,
           kill_first=TRIPLET),
    Mutant("triplet_cpu_sparse_columns_unsorted", TRIPLET_CPP,
           "    std::sort(first, end);\n", "",
           "CPU sparse S: each entry once, its row sum in increasing column", kill_first=TRIPLET),
    Mutant("triplet_gpu_pair_not_mirrored", TRIPLET_GPU_STEPS_HPP,
           "  dist[static_cast<std::size_t>(c) * n + r] = d;\n", "",
           "CUDA distances: each pair's distance goes to (r, c) and (c, r)", ci=True, kill_first=GPU_EMULATION),
    Mutant("triplet_gpu_reads_upper_triangle", TRIPLET_GPU_STEPS_HPP,
           "  if (r < c) return;", "  if (r > c) return;",
           "CUDA distances: cuBLAS's SYRK leaves x_r.x_c in the row-major lower triangle", kill_first=GPU_EMULATION),
)
