"""HardNet MIN and RANDOM, with and without anchor swap, at the last bit: the CPU core mines them from the dot
products on the squared distance x (the swapped values in the same pass, column by column) and takes square roots
only where it must, and must still decide exactly as the header's rule on D = sqrt(x) rounded in the features'
dtype. Two float32 values of x can share one D: the lowest such column (or row, for the swapped values) wins a tie,
and a D equal to the duplicate threshold is valid even where x < threshold**2. The cases are built in 1-D, where
every product is exact and the expected decisions can be computed in NumPy with the same float32 operations as the
core."""
import numpy as np
import pytest

import caffe_mining

EPS = 1e-6


def candidates(dist, labels, threshold, anchor_swap):
    """Row i's candidate j under the header's rule, from the distance matrix in its dtype: (swapped, value,
    candidate), each n x n. Valid when j != i, not D_ij < threshold and labels differ; with anchor_swap the candidate
    is the smaller valid one of D_ij and D_ji (D_ij at equal value), a candidate when either is valid."""
    n = len(dist)
    valid = ~np.eye(n, dtype=bool) & ~(dist < dist.dtype.type(threshold))
    if labels is not None:
        valid &= labels[:, None] != labels[None, :]
    if not anchor_swap:
        return np.zeros_like(valid), dist, valid
    swapped = valid.T & (~valid | (dist.T < dist))
    return swapped, np.where(swapped, dist.T, dist), valid | valid.T


def rule_in_dtype(anchor, positive, labels, threshold, dtype, anchor_swap=False, batch_reduce="MIN", uniforms=None):
    """The header's rule in `dtype`: D_ij = sqrt(max(a_i^2 + p_j^2 - 2 a_i p_j, 0) + eps), valid when j != i, not
    D_ij < threshold and labels differ. Candidate j of row i: D_ij, or with anchor_swap the smaller valid one of D_ij
    and D_ji (D_ij at equal value). MIN: the smallest candidate, lowest j at equal value; RANDOM: the
    floor(u_i * count_i)-th valid candidate in increasing j. 1-D inputs only.
    Returns (neg_index, neg_swapped, neg_count, pos_dist, neg_dist)."""
    a, p = anchor.astype(dtype)[:, 0], positive.astype(dtype)[:, 0]
    two, eps = dtype(2), dtype(EPS)
    sq = (a[:, None] * a[:, None] + p[None, :] * p[None, :]) - two * (a[:, None] * p[None, :])
    dist = np.sqrt(np.where(sq > 0, sq, dtype(0)) + eps)
    n = len(a)
    swapped, value, candidate = candidates(dist, labels, threshold, anchor_swap)
    count = candidate.sum(axis=1)
    if batch_reduce == "MIN":
        masked = np.where(candidate, value, np.inf)
        index = np.where(count > 0, np.argmin(masked, axis=1), -1)  # argmin: first of equal values
    else:
        u = np.asarray(uniforms).astype(dtype).astype(np.float64)
        rank = np.minimum(np.floor(u * count), np.maximum(count - 1, 0)).astype(int)
        index = np.array([np.flatnonzero(candidate[i])[rank[i]] if count[i] else -1 for i in range(n)])
    rows = np.arange(n)
    chosen_swapped = np.where(index >= 0, swapped[rows, index], False).astype(int)
    neg = np.where(index >= 0, value[rows, index], 0)
    return index, chosen_swapped, count, np.diag(dist), neg


def squared(p):
    """x of a positive p against a zero anchor, in float32 (what the core computes for that pair)."""
    p = np.float32(p)
    return (p * p - np.float32(2) * (np.float32(0) * p)) + np.float32(EPS)


def float32_twins(start, below_square=False):
    """(p_hi, p_lo): neighbouring float32 values from `start` up whose x differ while D = sqrt(x) is the same.
    below_square: also x(p_lo) < D**2 rounded, so that comparing x with the squared threshold would misjudge it."""
    p_lo = np.float32(start)
    for _ in range(100000):
        p_hi = np.nextafter(p_lo, np.float32(1))
        x_lo, x_hi = squared(p_lo), squared(p_hi)
        d = np.sqrt(x_hi)
        if x_hi > x_lo and np.sqrt(x_lo) == d and (not below_square or x_lo < d * d):
            return p_hi, p_lo
        p_lo = p_hi
    raise AssertionError(f"no float32 twins within 100000 steps of {start}")


def spread_positives(n, rng):
    """n distinct positives in [0.8, 0.95]: far from every twin below, so only the twins can be a row's minimum."""
    return rng.permutation(np.linspace(0.8, 0.95, n)).astype(np.float32)


def check_against_rule(anchor, positive, labels, threshold, dtype, anchor_swap=False, batch_reduce="MIN",
                       uniforms=None):
    got = caffe_mining.hardnet_loss(anchor.astype(dtype), positive.astype(dtype), labels, batch_reduce=batch_reduce,
                                    anchor_swap=anchor_swap, duplicate_threshold=threshold,
                                    uniforms=None if uniforms is None else uniforms.astype(dtype))
    index, swapped, count, pos, neg = rule_in_dtype(anchor, positive, labels, threshold, dtype, anchor_swap,
                                                    batch_reduce, uniforms)
    assert got.neg_index.tolist() == index.tolist()
    assert got.neg_swapped.tolist() == swapped.tolist()
    assert got.neg_count.tolist() == count.tolist()
    np.testing.assert_array_equal(got.pos_dist, pos)
    np.testing.assert_array_equal(got.neg_dist, neg.astype(dtype))
    return got


# The twins' columns: both in one group of 4 columns (the vector scan's lanes), in different lane groups of one
# block, and in different blocks of 64 columns (the larger-x twin always at the lower column).
@pytest.mark.parametrize("n,columns", [(16, (9, 10)), (40, (3, 30)), (130, (5, 100)), (130, (64, 129))])
@pytest.mark.parametrize("with_labels", [False, True])
def test_float32_tie_on_d_goes_to_the_lowest_column_though_its_x_is_larger(n, columns, with_labels):
    rng = np.random.default_rng(n)
    p_hi, p_lo = float32_twins(0.55)
    positive = spread_positives(n, rng)
    positive[columns[0]], positive[columns[1]] = p_hi, p_lo
    anchor = np.zeros(n, np.float32)[:, None]
    labels = np.arange(n, dtype=np.float64) if with_labels else None
    got = check_against_rule(anchor, positive[:, None], labels, 0.008, np.float32)
    others = [i for i in range(n) if i not in columns]
    assert set(got.neg_index[others].tolist()) == {columns[0]}  # not the smaller-x twin
    assert got.neg_index[columns[0]] == columns[1] and got.neg_index[columns[1]] == columns[0]


@pytest.mark.parametrize("n,columns", [(12, (4, 7)), (130, (2, 90))])
def test_float32_distance_equal_to_the_threshold_is_valid_though_x_is_below_its_square(n, columns):
    rng = np.random.default_rng(n)
    p_hi, p_lo = float32_twins(0.55, below_square=True)
    threshold = float(np.sqrt(squared(p_hi)))  # exactly D of both twins
    positive = spread_positives(n, rng)
    positive[columns[0]], positive[columns[1]] = p_hi, p_lo
    below = np.nextafter(p_lo, np.float32(0))  # D just under the threshold: a duplicate
    while np.sqrt(squared(below)) >= np.float32(threshold):
        below = np.nextafter(below, np.float32(0))
    positive[n - 1] = below
    anchor = np.zeros(n, np.float32)[:, None]
    got = check_against_rule(anchor, positive[:, None], None, threshold, np.float32)
    assert got.neg_count[0] == n - 2  # every column but the row's own and the one below the threshold
    assert got.neg_index[0] == columns[0]


# The swapped twins: anchors at two rows of a column whose positive is 0 (the larger-x twin at the lower row), so
# that the column's smallest D is shared; the other anchors are 0 and give that column duplicates only. Column 129 of
# 130 lies past the last block of lanes (either width): the scalar column update.
@pytest.mark.parametrize("n,rows,target", [(16, (9, 10), 2), (40, (3, 30), 39), (130, (5, 100), 64),
                                           (130, (64, 129), 0), (130, (7, 120), 129)])
@pytest.mark.parametrize("batch_reduce", ["MIN", "RANDOM"])
def test_float32_tie_on_d_among_swapped_values_goes_to_the_lowest_row(n, rows, target, batch_reduce):
    rng = np.random.default_rng(n)
    p_hi, p_lo = float32_twins(0.55)
    positive = spread_positives(n, rng)
    positive[target] = 0.0
    anchor = np.zeros(n, np.float32)
    anchor[rows[0]], anchor[rows[1]] = p_hi, p_lo
    uniforms = rng.random(n)
    got = check_against_rule(anchor[:, None], positive[:, None], None, 0.008, np.float32, True, batch_reduce,
                             uniforms)
    if batch_reduce == "MIN":
        assert got.neg_index[target] == rows[0] and got.neg_swapped[target] == 1  # not the smaller-x twin


# A tie between a row's own minimum (column `column`) and its swapped minimum (row `row`) at one D, reached by twins of
# different x: the lower index wins, swapped only if that is the row; at one index both ways, the row's own value.
@pytest.mark.parametrize("n,column,row", [(16, 9, 10), (16, 10, 9), (130, 100, 5), (130, 5, 100), (40, 7, 7)])
def test_float32_tie_between_own_and_swapped_minimum(n, column, row):
    rng = np.random.default_rng(n)
    p_hi, p_lo = float32_twins(0.55)
    target = 1
    positive = spread_positives(n, rng)
    anchor = np.zeros(n, np.float32)
    positive[target] = 0.0
    positive[column] = p_hi if column != row else p_lo  # D_target,column: anchor 0 against p
    anchor[row] = p_lo  # D_row,target: a against positive 0
    got = check_against_rule(anchor[:, None], positive[:, None], None, 0.008, np.float32, True)
    assert got.neg_index[target] == min(column, row)
    assert got.neg_swapped[target] == (1 if row < column else 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 63, 64, 65, 127, 129, 200])
@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("batch_reduce,anchor_swap", [("MIN", False), ("MIN", True), ("RANDOM", False),
                                                      ("RANDOM", True)])
def test_decisions_follow_the_rule_in_the_features_dtype(dtype, n, with_labels, batch_reduce, anchor_swap):
    """Values on a coarse grid: many exact ties of D (lowest column wins), duplicates at D = sqrt(eps) below the
    threshold in rows and in columns, rows left without a negative by the labels; every block size and tail of the
    row scan. RANDOM's uniforms include 0 and the largest below 1."""
    rng = np.random.default_rng(1000 + n)
    anchor = rng.integers(0, 12, size=(n, 1)) / 8.0
    positive = rng.integers(0, 12, size=(n, 1)) / 8.0
    labels = rng.integers(0, 3, size=n).astype(np.float64) if with_labels else None
    uniforms = rng.random(n)
    uniforms[::5] = 0.0
    uniforms[1::7] = np.nextafter(dtype(1), dtype(0))
    check_against_rule(anchor, positive, labels, 0.008, dtype, anchor_swap, batch_reduce, uniforms)


@pytest.mark.parametrize("batch_reduce", ["MIN", "RANDOM"])
@pytest.mark.parametrize("anchor_swap", [False, True])
def test_rows_without_duplicates_and_rows_with_them_both_ways(batch_reduce, anchor_swap):
    """RANDOM takes the rank among the allowed columns directly when a row (or, with swap, its row or its column)
    has no duplicate, and walks the candidates otherwise: rows of each kind, in one batch (equal values on a grid
    of 40 give duplicates, D = sqrt(eps))."""
    rng = np.random.default_rng(5)
    n = 70
    anchor = rng.integers(0, 40, size=(n, 1)) / 8.0
    positive = rng.integers(0, 40, size=(n, 1)) / 8.0
    labels = rng.integers(0, 4, size=n).astype(np.float64)
    uniforms = rng.random(n)
    got = check_against_rule(anchor, positive, labels, 0.1, np.float32, anchor_swap, batch_reduce, uniforms)
    allowed = (labels[:, None] != labels[None, :]).sum(axis=1)
    assert (got.neg_count == allowed).any() and (got.neg_count < allowed).any()


@pytest.mark.parametrize("n", [63, 64, 65, 150])
@pytest.mark.parametrize("with_labels", [False, True])
def test_min_matches_the_reference_in_float64_across_blocks(n, with_labels):
    """General descriptors (8-D) over more than one block of 64 columns, duplicates included: decisions, distances
    and gradients against the NumPy reference."""
    from caffe_mining import reference

    rng = np.random.default_rng(n)
    anchor = rng.normal(size=(n, 8)) / np.sqrt(8)
    positive = anchor + 0.3 * rng.normal(size=(n, 8)) / np.sqrt(8)
    positive[n // 2] = anchor[3]  # a duplicate: never a negative of row 3
    labels = rng.integers(0, 20, size=n).astype(np.float64) if with_labels else None
    got = caffe_mining.hardnet_loss(anchor, positive, labels, batch_reduce="MIN", anchor_swap=False)
    ref = reference.hardnet_loss(anchor, positive, labels, batch_reduce="MIN", anchor_swap=False)
    assert got.neg_index.tolist() == ref.neg_index.tolist()
    assert got.neg_count.tolist() == ref.neg_count.tolist()
    np.testing.assert_allclose(got.neg_dist, ref.neg_dist, rtol=1e-12)
    np.testing.assert_allclose(got.loss, ref.loss, rtol=1e-12)
    np.testing.assert_allclose(got.grad_anchor, ref.grad_anchor, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got.grad_positive, ref.grad_positive, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("n", [4, 5, 7, 8, 9, 23, 66])
@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("anchor_swap", [False, True])
@pytest.mark.parametrize("loss_type", ["TRIPLET_MARGIN", "CONTRASTIVE", "SOFTMAX"])
def test_average_float32_decisions_and_values(n, with_labels, anchor_swap, loss_type):
    """AVERAGE in float32 (a block of 8 rows (AVX2) or 4 (SSE2) at a time for the two hinge losses, with the scalar
    code for the rows and columns past the last block): the reported hardest candidate follows the MIN rule exactly, the counts too, and the loss and
    gradients agree with the float64 reference on a grid with ties and duplicates."""
    from caffe_mining import reference

    rng = np.random.default_rng(2000 + n)
    anchor = rng.integers(0, 12, size=(n, 1)) / 8.0
    positive = rng.integers(0, 12, size=(n, 1)) / 8.0
    labels = rng.integers(0, 3, size=n).astype(np.float64) if with_labels else None
    got = caffe_mining.hardnet_loss(anchor.astype(np.float32), positive.astype(np.float32), labels,
                                    batch_reduce="AVERAGE", anchor_swap=anchor_swap, loss_type=loss_type, margin=0.7)
    index, swapped, count, pos, neg = rule_in_dtype(anchor, positive, labels, 0.008, np.float32, anchor_swap)
    assert got.neg_index.tolist() == index.tolist()
    assert got.neg_swapped.tolist() == swapped.tolist()
    assert got.neg_count.tolist() == count.tolist()
    np.testing.assert_array_equal(got.neg_dist, neg.astype(np.float32))
    ref = reference.hardnet_loss(anchor, positive, labels, batch_reduce="AVERAGE", anchor_swap=anchor_swap,
                                 loss_type=loss_type, margin=0.7)
    np.testing.assert_allclose(got.loss, ref.loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.grad_anchor, ref.grad_anchor, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.grad_positive, ref.grad_positive, rtol=1e-4, atol=1e-5)



@pytest.mark.parametrize("n", [9, 66, 150, 203])
@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("anchor_swap", [False, True])
@pytest.mark.parametrize("loss_type", ["TRIPLET_MARGIN", "CONTRASTIVE"])
def test_average_float32_sums_in_order(n, with_labels, anchor_swap, loss_type):
    """AVERAGE in float32 to the bit, its sums in the scalar code's order: the forward adds each row's candidate
    losses in increasing j, divides by the count, adds the rows' terms in increasing i and divides by the rows with a
    candidate; the backward adds each row's weights V_ij = scale * W_ij / D_ij in increasing j and each column's in
    increasing i. With a_i = (x_i, 0) and p_j = (0, y_j) every dot product is 0, so the GEMMs add exact zeros to
    dA[:, 0] = row_sum * x and dP[:, 1] = col_sum * y, which show each row's and column's sum bit for bit. The lanes
    (blocks of rows; with anchor swap pairs of tiles, a super block at a time) must keep that order: n = 150 and 203
    span several super blocks of either width and leave rows and columns to the scalar code."""
    f = np.float32
    rng = np.random.default_rng(3000 + n)
    x = (rng.integers(4, 40, size=n) / 8.0).astype(f)
    y = (rng.integers(4, 40, size=n) / 8.0).astype(f)
    anchor = np.stack([x, np.zeros(n, f)], axis=1)
    positive = np.stack([np.zeros(n, f), y], axis=1)
    labels = rng.integers(0, 5, size=n).astype(np.float64) if with_labels else None
    margin, loss_weight = f(4.0), f(1.5)  # most hinges active: long sums
    got = caffe_mining.hardnet_loss(anchor, positive, labels, batch_reduce="AVERAGE", anchor_swap=anchor_swap,
                                    loss_type=loss_type, margin=float(margin), loss_weight=float(loss_weight))
    sq = (x[:, None] * x[:, None] + y[None, :] * y[None, :]) - f(2) * f(0)
    dist = np.sqrt(np.where(sq > 0, sq, f(0)) + f(EPS))  # inexact: every sum below depends on its order
    swapped, value, candidate = candidates(dist, labels, 0.008, anchor_swap)
    pos = np.diag(dist)[:, None]
    hinge = (margin - value) if loss_type == "CONTRASTIVE" else ((margin + pos) - value)
    active = hinge > 0
    row_loss = np.where(active, hinge, f(0)) + (pos if loss_type == "CONTRASTIVE" else f(0))
    row_dpos = np.ones_like(hinge) if loss_type == "CONTRASTIVE" else active.astype(f)
    count = candidate.sum(axis=1)
    counts = np.maximum(count, 1).astype(f)
    in_order = lambda terms, axis: np.add.accumulate(terms, axis=axis, dtype=f)  # one by one, no pairwise sum
    terms = np.where(count > 0, in_order(np.where(candidate, row_loss, f(0)), 1)[:, -1] / counts, f(0)).astype(f)
    dpos = np.where(count > 0, in_order(np.where(candidate, row_dpos, f(0)), 1)[:, -1] / counts, f(0)).astype(f)
    rows = int((count > 0).sum())
    assert got.neg_count.tolist() == count.tolist()
    assert f(got.loss).tobytes() == (in_order(terms, 0)[-1] / f(rows)).tobytes()
    # W_ij: row i's own candidate D_ij (not swapped), and with swap row j's candidate i when that is the swapped D_ij.
    minus_inverse = (f(-1) / counts).astype(f)
    dneg = np.where(active, minus_inverse[:, None], f(0))  # dneg_ij / count_i of row i's candidate j
    own = candidate & ~swapped
    hinge_mirror = (margin - dist) if loss_type == "CONTRASTIVE" else ((margin + pos.T) - dist)
    dneg_mirror = np.where(hinge_mirror > 0, minus_inverse[None, :], f(0))  # row j's hinge at D_ij
    weight = f(0) + np.where(own, dneg, f(0))
    if anchor_swap:
        weight = weight + np.where(swapped.T, dneg_mirror, f(0))
    weight = weight.astype(f)
    np.fill_diagonal(weight, np.where(count > 0, dpos, f(0)))
    v = (f(loss_weight / f(rows)) * weight) / dist
    np.testing.assert_array_equal(got.grad_anchor[:, 0], in_order(v, 1)[:, -1] * x)
    np.testing.assert_array_equal(got.grad_positive[:, 1], in_order(v, 0)[-1, :] * y)
