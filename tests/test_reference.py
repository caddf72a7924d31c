"""caffe_mining.reference against slow, obviously-correct loop implementations and hand-computed values; the
hand-built HardNet cases run on the C++ core (bindings) too."""
import itertools
import math

import numpy as np
import pytest

import caffe_mining
from caffe_mining import reference
from caffe_mining.options import BATCH_REDUCES, LOSS_TYPES


# ---------------------------------------------------------------------------------------------------------------
# Slow references: plain loops over pairs, written from the text.

def slow_contrastive(a, b, sim, margin=1.0, legacy=False, ratio=1, guard=1e-4, loss_weight=1.0):
    n, dim = len(a), len(a[0])
    cost, dcost = [], []  # dcost[i]: d cost_i / d a_i as a list
    for i in range(n):
        diff = [a[i][k] - b[i][k] for k in range(dim)]
        d2 = sum(x * x for x in diff)
        d = math.sqrt(d2)
        if sim[i] == 1:
            cost.append(d2)
            dcost.append([2 * x for x in diff])
        elif legacy:
            cost.append(max(margin - d2, 0.0))
            dcost.append([-2 * x if margin - d2 > 0 else 0.0 for x in diff])
        else:
            cost.append(max(margin - d, 0.0) ** 2)
            dcost.append([-2 * (margin - d) / (d + guard) * x if margin - d > 0 else 0.0 for x in diff])
    k = n // ratio
    by_hardness = lambda idx: sorted(idx, key=lambda i: (-cost[i], i))  # noqa: E731
    queues = {True: by_hardness([i for i in range(n) if sim[i] == 1]),
              False: by_hardness([i for i in range(n) if sim[i] == 0])}
    picked = []
    for turn in range(k):
        kind = turn % 2 == 0  # similar first, then alternate
        if not queues[kind]:
            kind = not kind  # that kind ran out: the other fills
        picked.append(queues[kind].pop(0))
    loss = sum(cost[i] for i in picked) / (2 * k) if k else 0.0
    grad = [[0.0] * dim for _ in range(n)]
    for i in picked:
        grad[i] = [loss_weight * g / (2 * k) for g in dcost[i]]
    return loss, np.array(grad), sorted(picked)


def slow_hardnet(a, p, labels=None, margin=1.0, anchor_swap=False, batch_reduce="MIN", loss_type="TRIPLET_MARGIN",
                 eps=1e-6, threshold=0.008, uniforms=None, loss_weight=1.0):
    n, dim = len(a), len(a[0])
    dot = lambda x, y: sum(x[k] * y[k] for k in range(dim))  # noqa: E731
    dist = [[math.sqrt(max(dot(a[i], a[i]) + dot(p[j], p[j]) - 2 * dot(a[i], p[j]), 0.0) + eps) for j in range(n)]
            for i in range(n)]

    def valid(i, j):
        return i != j and dist[i][j] >= threshold and (labels is None or labels[i] != labels[j])

    def row_loss(pos, neg):  # l, dl/dpos, dl/dneg
        if loss_type == "TRIPLET_MARGIN":
            h = margin + pos - neg
            return (h, 1.0, -1.0) if h > 0 else (0.0, 0.0, 0.0)
        if loss_type == "SOFTMAX":
            s = 1.0 / (1.0 + math.exp(neg - pos))
            return -math.log(math.exp(2 - pos) / (math.exp(2 - pos) + math.exp(2 - neg))), s, -s
        h = margin - neg
        return (h + pos, 1.0, -1.0) if h > 0 else (pos, 1.0, 0.0)

    weight = {}  # (row, col) of D -> d E / d D
    losses, chosen = [], []
    rows = []
    for i in range(n):
        cands = []  # (value, j, (r, c) of the D entry used)
        for j in range(n):
            if j == i:
                continue
            v_ij, v_ji = valid(i, j), anchor_swap and valid(j, i)
            if v_ij and (not v_ji or dist[i][j] <= dist[j][i]):
                cands.append((dist[i][j], j, (i, j)))
            elif v_ji:
                cands.append((dist[j][i], j, (j, i)))
        if not cands:
            chosen.append((-1, False))
            continue
        rows.append(i)
        pos = dist[i][i]
        hardest = min(cands, key=lambda c: (c[0], c[1]))
        if batch_reduce == "AVERAGE":
            terms = [row_loss(pos, c[0]) for c in cands]
            losses.append(sum(t[0] for t in terms) / len(cands))
            for c, t in zip(cands, terms):
                weight[(i, i)] = weight.get((i, i), 0.0) + t[1] / len(cands)
                weight[c[2]] = weight.get(c[2], 0.0) + t[2] / len(cands)
            pick = hardest
        else:
            pick = hardest if batch_reduce == "MIN" else cands[min(int(uniforms[i] * len(cands)), len(cands) - 1)]
            l, dpos, dneg = row_loss(pos, pick[0])
            losses.append(l)
            weight[(i, i)] = weight.get((i, i), 0.0) + dpos
            weight[pick[2]] = weight.get(pick[2], 0.0) + dneg
        chosen.append((pick[1], pick[2] != (i, pick[1])))
    r = len(rows)
    loss = sum(losses) / r if r else 0.0
    grad_a, grad_p = np.zeros((n, dim)), np.zeros((n, dim))
    for (row, col), w in weight.items():
        for k in range(dim):
            g = loss_weight * w / r * (a[row][k] - p[col][k]) / dist[row][col]
            grad_a[row][k] += g
            grad_p[col][k] -= g
    return loss, grad_a, grad_p, chosen


# ---------------------------------------------------------------------------------------------------------------
# MiningContrastiveLoss

def test_contrastive_hand_computed():
    # d = 0, 5, 1, 0; similar costs 0 and 25; dissimilar (m = 2) costs (2 - 1)^2 = 1 and 2^2 = 4.
    a = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    b = np.zeros((4, 2))
    sim = [1, 1, 0, 0]
    r = reference.mining_contrastive_loss(a, b, sim, margin=2.0, mining_ratio=2)
    assert r.loss == pytest.approx((25 + 4) / 4)  # K = 2: the hardest similar (1) and dissimilar (3) pair
    assert r.picked.tolist() == [False, True, False, True]
    np.testing.assert_allclose(r.grad_feat, [[0, 0], [1.5, 2.0], [0, 0], [0, 0]])  # (a - b)/K; pair 3 has d = 0
    np.testing.assert_allclose(r.grad_feat_p, -r.grad_feat)

    all_pairs = reference.mining_contrastive_loss(a, b, sim, margin=2.0, mining_ratio=1)
    assert all_pairs.loss == pytest.approx((0 + 25 + 1 + 4) / 8)  # ratio 1: Caffe's ContrastiveLoss, 1/(2N)
    np.testing.assert_allclose(all_pairs.grad_feat[2], [-(2 - 1) / (1 + 1e-4) / 4, 0.0])  # Caffe's guard

    legacy = reference.mining_contrastive_loss(a, b, sim, margin=2.0, mining_ratio=2, legacy_version=True)
    assert legacy.loss == pytest.approx((25 + 2) / 4)  # legacy dissimilar costs max(2 - d^2, 0) = 1, 2
    np.testing.assert_allclose(legacy.grad_feat[3], [0.0, 0.0])


def test_contrastive_ratio_above_n_gives_zero():
    r = reference.mining_contrastive_loss(np.ones((3, 2)), np.zeros((3, 2)), [1, 0, 1], mining_ratio=4)
    assert r.loss == 0.0 and not r.picked.any()
    assert not r.grad_feat.any() and not r.grad_feat_p.any()


def test_mining_order_alternates_and_fills():
    cost = np.array([1.0, 5.0, 5.0, 2.0, 0.0, 3.0])
    similar = np.array([1, 0, 1, 0, 0, 0], bool)
    # similar by hardness: 2, 0; dissimilar: 1, 5, 3, 4 -> 2 1 0 5, then the dissimilar ones fill.
    assert reference.mining_order(cost, similar).tolist() == [2, 1, 0, 5, 3, 4]
    # ties go to the lower index
    assert reference.mining_order(np.ones(4), np.array([1, 1, 0, 0], bool)).tolist() == [0, 2, 1, 3]


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("ratio", [1, 2, 3, 7])
def test_contrastive_matches_loops(rng, legacy, ratio):
    for trial in range(20):
        n, dim = int(rng.integers(1, 10)), int(rng.integers(1, 5))
        a, b = rng.normal(size=(n, dim)) * 0.4, rng.normal(size=(n, dim)) * 0.4
        sim = rng.integers(0, 2, size=n)
        if trial % 5 == 0:  # copies of pair 0: exactly equal costs, ties broken by index
            a[: n // 2], b[: n // 2] = a[0], b[0]
        loss, grad, picked = slow_contrastive(a.tolist(), b.tolist(), sim.tolist(), 0.9, legacy, ratio,
                                              loss_weight=0.5)
        r = reference.mining_contrastive_loss(a, b, sim, margin=0.9, legacy_version=legacy, mining_ratio=ratio,
                                              loss_weight=0.5)
        assert r.loss == pytest.approx(loss, rel=1e-12, abs=1e-15)
        assert np.flatnonzero(r.picked).tolist() == picked
        np.testing.assert_allclose(r.grad_feat, grad, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(r.grad_feat_p, -grad, rtol=1e-12, atol=1e-15)


def test_contrastive_accepts_caffe_4d_blobs(rng):
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    flat = reference.mining_contrastive_loss(a, b, [1, 0, 1, 0, 1], mining_ratio=2)
    blob = reference.mining_contrastive_loss(a[:, :, None, None], b[:, :, None, None], [1, 0, 1, 0, 1],
                                             mining_ratio=2)
    assert blob.loss == flat.loss and blob.grad_feat.shape == (5, 3, 1, 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(feat=np.zeros((2, 3)), feat_p=np.zeros((2, 4)), sim=[0, 1]), "same shape"),
    (dict(feat=np.zeros(3), feat_p=np.zeros(3), sim=[0, 1, 1]), "shape (N, D)"),
    (dict(feat=np.zeros((2, 3)), feat_p=np.zeros((2, 3)), sim=[0, 1, 1]), "N = 2 labels"),
    (dict(feat=np.zeros((2, 3)), feat_p=np.zeros((2, 3)), sim=[0, 2]), "0 or 1"),
    (dict(feat=np.zeros((2, 3)), feat_p=np.zeros((2, 3)), sim=[0, 1], mining_ratio=0), "mining_ratio"),
])
def test_contrastive_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        reference.mining_contrastive_loss(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# HardNetLoss

EPS = 1e-6


@pytest.fixture(params=["reference", "core"])
def hardnet(request):
    """The hand-built cases below hold for the reference and for the C++ core (through the bindings) alike."""
    return reference.hardnet_loss if request.param == "reference" else caffe_mining.hardnet_loss


def two_pairs():
    return np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 0.1], [1.0, 0.1]])


@pytest.mark.parametrize("loss_type, expected", [
    ("TRIPLET_MARGIN", 1 + math.sqrt(0.01 + EPS) - math.sqrt(1.01 + EPS)),
    ("SOFTMAX", math.log1p(math.exp(math.sqrt(0.01 + EPS) - math.sqrt(1.01 + EPS)))),
    ("CONTRASTIVE", max(1 - math.sqrt(1.01 + EPS), 0) + math.sqrt(0.01 + EPS)),
])
def test_hardnet_hand_computed(hardnet, loss_type, expected):
    # Both rows: pos = |(0, -0.1)|, the only negative at distance sqrt(1 + 0.01).
    a, p = two_pairs()
    r = hardnet(a, p, loss_type=loss_type)
    assert r.loss == pytest.approx(expected, rel=1e-12)
    assert r.neg_index.tolist() == [1, 0] and r.neg_count.tolist() == [2 - 1, 2 - 1]


def test_hardnet_triplet_gradient_by_hand(hardnet):
    a, p = two_pairs()
    r = hardnet(a, p)
    pos, neg = math.sqrt(0.01 + EPS), math.sqrt(1.01 + EPS)
    # row 0: E0 = 1 + D00 - D01; row 1: E1 = 1 + D11 - D10; E = (E0 + E1)/2.
    # dE/da_0 = 1/2 [(a0 - p0)/D00 - (a0 - p1)/D01]
    # dE/dp_1 = 1/2 [(a0 - p1)/D01 - (a1 - p1)/D11]
    np.testing.assert_allclose(r.grad_anchor[0], 0.5 * ((a[0] - p[0]) / pos - (a[0] - p[1]) / neg), rtol=1e-12)
    np.testing.assert_allclose(r.grad_positive[1], 0.5 * ((a[0] - p[1]) / neg - (a[1] - p[1]) / pos), rtol=1e-12)


def test_hardnet_same_labels_leave_rows_out(hardnet):
    a = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    p = a + 0.1
    r = hardnet(a, p, labels=[7, 7, 3])
    # rows 0 and 1 share label 7: each has only row 2 as negative; row 2 has both.
    assert r.neg_count.tolist() == [1, 1, 2]
    assert r.neg_index[:2].tolist() == [2, 2]
    everyone_same = hardnet(a, p, labels=[1, 1, 1])
    assert everyone_same.loss == 0.0 and everyone_same.neg_index.tolist() == [-1, -1, -1]
    assert not everyone_same.grad_anchor.any() and not everyone_same.grad_positive.any()


def test_hardnet_empty_row_not_counted_in_mean(hardnet):
    # Row 0's only other-label candidate (2) is a duplicate (positive 2 = anchor 0): row 0 has no valid negative.
    a = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    p = np.array([[0.0, 0.3], [1.0, 0.4], [0.0, 0.0]])
    r = hardnet(a, p, labels=[0, 0, 1])
    assert r.neg_count.tolist() == [0, 1, 2] and r.neg_index[0] == -1
    dist = reference.hardnet_distance_matrix(a, p)
    row1 = max(1 + dist[1, 1] - dist[1, 2], 0)
    row2 = max(1 + dist[2, 2] - min(dist[2, 0], dist[2, 1]), 0)
    assert r.loss == pytest.approx((row1 + row2) / 2, rel=1e-12)  # R = 2, not 3
    assert not r.grad_anchor[0].any()  # row 0 takes part in no term (as anchor)


def test_hardnet_duplicates_are_never_negatives(hardnet):
    a = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    p = np.array([[0.0, 0.2], [0.0, 0.0005], [0.0, 1.3]])  # positive 1 duplicates anchor 0 (D_01 < 0.008)
    r = hardnet(a, p)
    assert r.neg_index[0] == 2  # not 1
    assert r.neg_count[0] == 1


def test_hardnet_anchor_swap_uses_columns(hardnet):
    # Anchor 1 is close to positive 0 while positive 1 is far from anchor 0: the swap finds D_10 for row 0.
    a = np.array([[0.0, 0.0], [0.3, 0.0], [5.0, 5.0]])
    p = np.array([[0.5, 0.0], [-2.0, 0.0], [5.0, 5.5]])
    plain = hardnet(a, p)
    swap = hardnet(a, p, anchor_swap=True)
    dist = reference.hardnet_distance_matrix(a, p)
    assert plain.neg_index[0] == 1 and not plain.neg_swapped[0]
    assert plain.neg_dist[0] == pytest.approx(dist[0, 1])
    assert swap.neg_index[0] == 1 and swap.neg_swapped[0]
    assert swap.neg_dist[0] == pytest.approx(dist[1, 0])
    assert swap.loss > plain.loss


def test_hardnet_swap_keeps_row_at_equal_value(hardnet):
    a = np.array([[0.0, 0.0], [1.0, 0.0]])
    p = np.array([[0.0, 0.0], [1.0, 0.0]])  # D_01 == D_10 exactly
    r = hardnet(a, p, anchor_swap=True)
    assert not r.neg_swapped.any()


def test_hardnet_random_rank_from_uniforms(hardnet):
    a = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    p = a + 0.05
    # row 0's candidates in index order are 1, 2, 3: u = 0.0 -> 1, 0.34 -> 2 (floor(1.02)), 0.99 -> 3.
    for u0, expected in ((0.0, 1), (0.34, 2), (0.99, 3)):
        r = hardnet(a, p, batch_reduce="RANDOM", uniforms=[u0, 0.0, 0.0, 0.0])
        assert r.neg_index[0] == expected
    with pytest.raises(ValueError, match="uniforms"):
        hardnet(a, p, batch_reduce="RANDOM")


def test_hardnet_average_is_mean_of_row_losses(hardnet):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 3))
    p = a + 0.3 * rng.normal(size=(4, 3))
    dist = reference.hardnet_distance_matrix(a, p)
    r = hardnet(a, p, batch_reduce="AVERAGE", margin=2.0)
    rows = [np.mean([max(2.0 + dist[i, i] - dist[i, j], 0) for j in range(4) if j != i]) for i in range(4)]
    assert r.loss == pytest.approx(np.mean(rows), rel=1e-12)


def test_hardnet_identical_descriptors_are_finite(hardnet):
    r = hardnet(np.zeros((3, 4)), np.zeros((3, 4)))
    assert np.isfinite(r.loss) and np.all(np.isfinite(r.grad_anchor)) and np.all(np.isfinite(r.grad_positive))
    assert r.loss == 0.0  # every D = sqrt(eps) < 0.008: all duplicates, no valid row


@pytest.mark.parametrize("batch_reduce, loss_type, anchor_swap",
                         list(itertools.product(BATCH_REDUCES, LOSS_TYPES, [False, True])))
def test_hardnet_matches_loops(rng, batch_reduce, loss_type, anchor_swap):
    for trial in range(6):
        n, dim = int(rng.integers(2, 7)), int(rng.integers(1, 4))
        a = rng.normal(size=(n, dim)) / np.sqrt(dim)
        p = a + 0.4 * rng.normal(size=(n, dim)) / np.sqrt(dim)
        labels = rng.integers(0, 3, size=n).tolist() if trial % 2 else None
        if trial == 5:
            p[1] = a[0]  # a duplicate
        u = rng.random(n)
        loss, ga, gp, chosen = slow_hardnet(a.tolist(), p.tolist(), labels, 0.8, anchor_swap, batch_reduce,
                                            loss_type, uniforms=u, loss_weight=1.5)
        r = reference.hardnet_loss(a, p, labels, margin=0.8, anchor_swap=anchor_swap, batch_reduce=batch_reduce,
                                   loss_type=loss_type, uniforms=u, loss_weight=1.5)
        assert r.loss == pytest.approx(loss, rel=1e-11, abs=1e-14)
        assert r.neg_index.tolist() == [c[0] for c in chosen]
        assert r.neg_swapped.tolist() == [c[1] for c in chosen]
        np.testing.assert_allclose(r.grad_anchor, ga, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(r.grad_positive, gp, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kwargs, message", [
    (dict(anchor=np.zeros((2, 3)), positive=np.zeros((3, 3))), "same shape"),
    (dict(anchor=np.zeros((2, 3)), positive=np.zeros((2, 3)), labels=[1, 2, 3]), "N = 2 values"),
    (dict(anchor=np.zeros((2, 3)), positive=np.zeros((2, 3)), batch_reduce="MAX"), "batch_reduce"),
    (dict(anchor=np.zeros((2, 3)), positive=np.zeros((2, 3)), loss_type="HINGE"), "loss_type"),
    (dict(anchor=np.zeros((2, 3)), positive=np.zeros((2, 3)), batch_reduce="RANDOM", uniforms=[0.5, 1.0]),
     r"\[0, 1\)"),
])
def test_hardnet_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        reference.hardnet_loss(**kwargs)
