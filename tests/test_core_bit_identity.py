"""The core's outputs, bit for bit, against those of the core before the loss kit's refactor (commit 8f48fae): a
sweep over both losses and every option, whose losses, gradients and decisions (picks, negatives, counts, costs,
distances) are hashed per case into tests/fixtures/core_outputs.json. One deliberate change since: HardNet's SOFTMAX
cases (34 of 472) were rewritten when its softplus and sigmoid moved to the kit's own exp and log1p
(common/exp_log.hpp, the same bits on CPU and GPU); every other case is still 8f48fae's.

The inputs are dyadic (k/8 with |k| <= 16, D <= 12) so that every product and sum of the distance GEMM is exact: the
outputs then do not depend on the BLAS's blocking or FMA, and the fixture holds on any machine. Rows are copied to
make ties and duplicates, and some cases hold a NaN (check_finite=False).

Regenerate (only for a deliberate change of behaviour, stated in the commit):
    PYTHONPATH=python python tests/test_core_bit_identity.py --write
"""
import hashlib
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "core_outputs.json"
DTYPES = ("float32", "float64")


def dyadic(rng, n, dim, dtype, copies=0, nan=False):
    x = (rng.integers(-16, 17, size=(n, dim)) / 8.0).astype(dtype)
    for _ in range(copies):  # duplicates: ties and distances below the duplicate threshold
        x[rng.integers(n)] = x[rng.integers(n)]
    if nan:
        x[rng.integers(n), rng.integers(dim)] = np.nan
    return x


def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:20]


def contrastive_cases():
    for dtype, legacy, ratio, margin, n, nan in itertools.product(
            DTYPES, (False, True), (1, 2, 3, 7), (1.0, 0.5, 4.0), (1, 6, 33), (False, True)):
        if nan and n == 1:
            continue
        yield f"contrastive-{dtype}-legacy{int(legacy)}-r{ratio}-m{margin}-n{n}-nan{int(nan)}", dict(
            dtype=dtype, legacy_version=legacy, mining_ratio=ratio, margin=margin, n=n, nan=nan)


def hardnet_cases():
    for dtype, swap, reduce, loss_type, labels, n in itertools.product(
            DTYPES, (False, True), ("MIN", "AVERAGE", "RANDOM"), ("TRIPLET_MARGIN", "SOFTMAX", "CONTRASTIVE"),
            (False, True), (2, 9, 40)):
        yield f"hardnet-{dtype}-swap{int(swap)}-{reduce}-{loss_type}-labels{int(labels)}-n{n}", dict(
            dtype=dtype, anchor_swap=swap, batch_reduce=reduce, loss_type=loss_type, labels=labels, n=n, nan=False,
            margin=1.0, duplicate_threshold=0.008)
    for dtype, reduce, swap in itertools.product(DTYPES, ("MIN", "AVERAGE", "RANDOM"), (False, True)):
        yield f"hardnet-{dtype}-swap{int(swap)}-{reduce}-nan", dict(
            dtype=dtype, anchor_swap=swap, batch_reduce=reduce, loss_type="TRIPLET_MARGIN", labels=False, n=7,
            nan=True, margin=1.0, duplicate_threshold=0.008)
    for dtype, reduce in itertools.product(DTYPES, ("MIN", "AVERAGE")):  # a threshold that masks real negatives
        yield f"hardnet-{dtype}-{reduce}-threshold", dict(
            dtype=dtype, anchor_swap=False, batch_reduce=reduce, loss_type="TRIPLET_MARGIN", labels=False, n=12,
            nan=False, margin=2.0, duplicate_threshold=1.5)


def seed_of(name):
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def run_contrastive(core, name, c):
    rng = np.random.default_rng(seed_of(name))
    dim = int(rng.integers(1, 13))
    a = dyadic(rng, c["n"], dim, c["dtype"], copies=2, nan=c["nan"])
    b = dyadic(rng, c["n"], dim, c["dtype"], copies=1)
    b[: c["n"] // 3] = a[: c["n"] // 3]  # some pairs at distance 0
    sim = rng.integers(0, 2, size=c["n"]).astype(np.float64)
    out = core.mining_contrastive_loss(a, b, sim, margin=c["margin"], legacy_version=c["legacy_version"],
                                       mining_ratio=c["mining_ratio"], loss_weight=0.75, backward=True,
                                       check_finite=False)
    loss, grad_a, grad_b, picked, cost = out
    return digest(np.array(loss), a, b, grad_a, grad_b, picked, cost)


def run_hardnet(core, name, c):
    rng = np.random.default_rng(seed_of(name))
    n = c["n"]
    dim = int(rng.integers(1, 13))
    anchor = dyadic(rng, n, dim, c["dtype"], copies=2, nan=c["nan"])
    positive = dyadic(rng, n, dim, c["dtype"], copies=2)
    positive[: n // 4] = anchor[: n // 4]
    labels = rng.integers(0, max(2, n // 3), size=n) if c["labels"] else None
    uniforms = rng.random(n) if c["batch_reduce"] == "RANDOM" else None
    out = core.hardnet_loss(anchor, positive, labels, margin=c["margin"], anchor_swap=c["anchor_swap"],
                            batch_reduce=c["batch_reduce"], loss_type=c["loss_type"],
                            duplicate_threshold=c["duplicate_threshold"], uniforms=uniforms, loss_weight=1.25,
                            backward=True, check_finite=False)
    return digest(np.array(out[0]), anchor, positive, *out[1:])


def outputs(core):
    result = {}
    for name, c in contrastive_cases():
        result[name] = run_contrastive(core, name, c)
    for name, c in hardnet_cases():
        result[name] = run_hardnet(core, name, c)
    return result


def test_outputs_are_those_of_the_core_before_the_refactor():
    from caffe_mining import _core

    expected = json.loads(FIXTURE.read_text())
    got = outputs(_core)
    assert got.keys() == expected.keys()
    differing = sorted(name for name in expected if got[name] != expected[name])
    assert not differing, f"{len(differing)} of {len(expected)} cases differ, e.g. {differing[:8]}"


def test_the_digest_sees_a_one_ulp_change():
    """The comparison bites: one gradient element one ulp off changes the case's digest."""
    from caffe_mining import _core

    rng = np.random.default_rng(0)
    a = dyadic(rng, 5, 3, "float32")
    out = list(_core.hardnet_loss(a, a[::-1].copy(), backward=True))
    before = digest(*out[1:])
    out[1] = out[1].copy()
    out[1][0, 0] = np.nextafter(out[1][0, 0], np.float32(np.inf))
    assert digest(*out[1:]) != before


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    from caffe_mining import _core

    FIXTURE.write_text(json.dumps(outputs(_core), indent=0, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
