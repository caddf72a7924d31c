"""Tests of the embedding digits example (models/embedding_digits): the P x K batch layout, the split by class
(no digit 7-9 in training), the databases in the order Caffe's HDF5Data reads them, the retrieval metrics on
hand-computed cases, and a few-iteration end-to-end run through the real ``caffe`` binary (skipped without a
built Caffe, failed instead when CAFFE_MINING_REQUIRE_CAFFE=1).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe_mining.examples import metrics
from caffe_mining.examples.digits import load_digits_images
from caffe_mining.examples.digits_classes import build_class_split_digits, read_database, standardise
from caffe_mining.examples.pk_batches import pk_batch_order

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "models" / "embedding_digits"


def _load_run_module():
    spec = importlib.util.spec_from_file_location("embedding_digits_run", EXAMPLE / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_batches(labels: np.ndarray, p: int, k: int) -> None:
    """Every consecutive chunk of P*K labels: P classes of K each, K/2 of each class in each half, and the
    pairs (i, i + PK/2) half same-class."""
    batch = p * k
    assert len(labels) % batch == 0
    for start in range(0, len(labels), batch):
        chunk = labels[start:start + batch]
        classes, counts = np.unique(chunk, return_counts=True)
        assert len(classes) == p and np.all(counts == k), (start, chunk)
        first, second = chunk[:batch // 2], chunk[batch // 2:]
        for c in classes:
            assert np.sum(first == c) == k // 2 and np.sum(second == c) == k // 2
        assert np.sum(first == second) == batch // 4


# ------------------------------------------------------------------------------------------ P x K batches
@pytest.mark.parametrize("p, k", [(3, 4), (4, 8), (2, 4)])
def test_pk_batch_order_gives_p_classes_of_k_with_half_similar_pairs(p, k):
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1, 2, 3], [13, 9, 17, 8])       # unequal classes, one of exactly K = 8
    order = pk_batch_order(labels, p, k, n_epochs=3, rng=rng)
    _check_batches(labels[order], p, k)
    one_epoch = pk_batch_order(labels, p, k, n_epochs=1, rng=rng)
    assert len(np.unique(one_epoch)) == len(one_epoch)     # no sample twice within an epoch


def test_pk_batch_order_reshuffles_every_epoch():
    labels = np.repeat(np.arange(4), 16)
    order = pk_batch_order(labels, 4, 4, n_epochs=2, rng=np.random.default_rng(0))
    epoch = len(order) // 2
    assert len(order) == 2 * 4 * 4 * 4                      # 4 batches an epoch (16 samples = 4 groups a class)
    assert sorted(order[:epoch]) == sorted(order[epoch:]) == list(range(64))
    # Not just another row order: the samples are grouped into batches anew.
    partition = [{frozenset(order[s:s + 16]) for s in range(e, e + epoch, 16)} for e in (0, epoch)]
    assert partition[0] != partition[1]


@pytest.mark.parametrize("p, k, message", [(1, 8, "classes_per_batch"), (5, 8, "classes_per_batch"),
                                           (2, 6, "multiple of 4"), (2, 12, "at least samples_per_class")])
def test_pk_batch_order_rejects_impossible_layouts(p, k, message):
    labels = np.repeat([0, 1, 2, 3], 10)
    with pytest.raises(ValueError, match=message):
        pk_batch_order(labels, p, k, 1, np.random.default_rng(0))


# ------------------------------------------------------------------------------------- the digits database
@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
    return build_class_split_digits(tmp_path_factory.mktemp("embedding_digits"), min_train_batches=50,
                                    batches_per_file=7, log=lambda _: None)


def test_training_database_is_p_by_k_batches_of_digits_0_to_6_in_file_order(digits_data):
    data, label = read_database(digits_data.train_list)
    assert digits_data.batch_size == 56 and len(label) >= 50 * 56
    assert set(np.unique(label).astype(int)) == set(range(7))           # no held-out digit in training
    _check_batches(label, 7, 8)
    # Files are whole batches, so no batch straddles a file (the layer reads the list in order).
    import h5py

    for path in digits_data.train_list.read_text().split():
        with h5py.File(path, "r") as h5:
            assert len(h5["label"]) % 56 == 0
    # Every row is the standardised image of a digit of its label, among the training digits.
    images, labels = load_digits_images()
    train_std, heldout_std = standardise(images[labels < 7], images[labels >= 7])
    by_image = {row.tobytes(): int(lab) for row, lab in zip(train_std, labels[labels < 7])}
    assert all(by_image[row.tobytes()] == int(lab) for row, lab in zip(data[:, 0], label))
    assert not {row.tobytes() for row in heldout_std} & set(by_image)   # no held-out image in training


def test_heldout_split_is_every_digit_7_to_9(digits_data):
    images, labels = load_digits_images()
    assert len(digits_data.heldout_labels) == np.sum(labels >= 7) == 533
    assert set(digits_data.heldout_labels) == {7, 8, 9}
    assert set(digits_data.train_labels) == set(range(7)) and len(digits_data.train_labels) == 1797 - 533
    _, held_label = read_database(digits_data.heldout_list)
    _check_batches(held_label, 3, 8)
    assert digits_data.heldout_batches == len(held_label) // 24


def test_standardisation_uses_the_training_digits_only(digits_data):
    flat = digits_data.train_images.reshape(len(digits_data.train_images), -1).astype(np.float64)
    varying = flat.std(axis=0) > 0
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=0)[varying], 1.0, atol=1e-5)
    held = digits_data.heldout_images.reshape(len(digits_data.heldout_images), -1)
    assert abs(held.mean()) > 0.01                         # the held-out digits keep their own offset


def test_train_val_reads_in_order_with_the_pk_batch():
    text = (EXAMPLE / "train_val.prototxt").read_text()
    train = re.search(r"include \{ phase: TRAIN \}\s*hdf5_data_param \{([^}]*)\}", text).group(1)
    assert "shuffle: false" in train and "batch_size: 56" in train
    test = re.search(r"include \{ phase: TEST \}\s*hdf5_data_param \{([^}]*)\}", text).group(1)
    assert "shuffle: false" in test and "batch_size: 24" in test


# ------------------------------------------------------------------------------------------------ metrics
POINTS = np.array([[0.0], [1.0], [2.5], [5.0], [8.0], [10.0], [30.0]])
LABELS = np.array([0, 1, 0, 1, 2, 2, 3])


def test_recall_at_k_hand_computed():
    # 1-D points; label 3 has one member, so it is never found. Nearest others, in order:
    #   0 (label 0): 1, 2.5, 5, 8      -> found at rank 2
    #   1 (label 1): 0, 2.5, 5         -> rank 3
    #   2.5 (label 0): 1, then 0 and 5 tied at 2.5: the lower index (0) first -> rank 2
    #   5 (label 1): 2.5, 8, 1         -> rank 3
    #   8, 10 (label 2): each other    -> rank 1;  30: never
    assert metrics.recall_at_k(POINTS, LABELS, (1, 2, 4)) == {1: 2 / 7, 2: 4 / 7, 4: 6 / 7}


def test_recall_at_k_ties_go_to_the_lower_index():
    points = np.array([[0.0], [-1.0], [1.0]])
    labels = np.array([0, 1, 0])
    # Query 0 has rows 1 (other label) and 2 (its label) at distance 1: row 1 wins the tie -> miss.
    assert metrics.recall_at_k(points, labels, (1,)) == {1: 1 / 3}


def test_recall_at_k_rejects_bad_k():
    with pytest.raises(ValueError, match="every k"):
        metrics.recall_at_k(np.zeros((3, 2)), np.array([0, 0, 1]), (3,))


def test_embedding_metrics_hand_computed():
    run = _load_run_module()
    found = run.embedding_metrics(POINTS, LABELS)
    # Positive pairs: (0, 2.5) d 2.5, (1, 5) d 4, (8, 10) d 2; 95 % of 3 needs all three: threshold 4. Of the
    # 21 - 3 = 18 negative pairs, (0, 1) 1, (1, 2.5) 1.5, (2.5, 5) 2.5 and (5, 8) 3 are within 4.
    assert found == {"recall_at_1": 2 / 7, "recall_at_4": 6 / 7, "fpr95": 4 / 18}


# ------------------------------------------------------------------------------------------ end to end
def _caffe_or_skip():
    from caffe_mining.examples.caffe_run import CaffeNotFound, find_caffe_binary, import_pycaffe

    try:
        find_caffe_binary()
        caffe = import_pycaffe()
        missing = [t for t in ("MarginLoss", "TripletLoss") if t not in caffe.layer_type_list()]
        if missing:
            raise CaffeNotFound(f"pycaffe lacks {missing}")
    except CaffeNotFound as missing:
        if os.environ.get("CAFFE_MINING_REQUIRE_CAFFE") == "1":
            pytest.fail(f"CAFFE_MINING_REQUIRE_CAFFE=1 but: {missing}")
        pytest.skip(str(missing))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(caffe.__file__).parents[1]), str(REPO / "python"),
                                         env.get("PYTHONPATH", "")])
    return env


def test_embedding_digits_trains_every_loss_with_caffe_and_evaluates(tmp_path):
    env = _caffe_or_skip()
    completed = subprocess.run([sys.executable, str(EXAMPLE / "run.py"), "--iterations", "40", "--snapshot-every",
                                "20", "--seeds", "1", "--learning-rates", "0.05", "--data-dir", str(tmp_path / "data"),
                                "--out", str(tmp_path / "runs")], env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads((tmp_path / "runs" / "results" / "results.json").read_text())
    run = _load_run_module()
    assert {r["variant"] for r in results["runs"]} == set(run.LOSSES)
    for record in results["runs"]:
        assert [s["iteration"] for s in record["snapshots"]] == [20, 40]
        assert 0.0 <= record["final"]["fpr95"] <= 1.0 and 0.0 < record["final"]["recall_at_1"] <= 1.0
        if record["variant"].startswith("margin"):
            assert record["final"]["beta"] != pytest.approx(1.2, abs=1e-6)   # beta is learnt
        else:
            assert "beta" not in record["final"]
    for figure in ("loss_curves.png", "heldout_metrics.png", "beta.png", "projection.png"):
        assert (tmp_path / "runs" / "results" / figure).is_file()


def test_train_net_forms_same_digit_pairs_and_unit_rows_in_caffe(tmp_path):
    """The stock-layer plumbing of train_val.prototxt, run by pycaffe on the real database: sim is 1 exactly
    where the two halves' labels agree (14 of 28 pairs), and the embedding rows have norm 1."""
    _caffe_or_skip()
    from caffe_mining.examples.caffe_run import import_pycaffe
    from caffe_mining.examples.experiment import render_run

    caffe = import_pycaffe()
    run = _load_run_module()
    data = build_class_split_digits(tmp_path / "data", min_train_batches=3, log=lambda _: None)
    variant = run.variants(0.01, data.batch_size, run.BETA_STEP_PER_SAMPLE)[0]   # MarginLoss, with its beta param
    solver = render_run(EXAMPLE / "train_val.prototxt", EXAMPLE / "solver.prototxt", variant, 1, tmp_path / "run",
                        {"TRAIN": data.train_list, "TEST": data.heldout_list})
    net = caffe.Net(str(solver.parent / "train_val.prototxt"), caffe.TRAIN)
    _, file_labels = read_database(data.train_list)
    for batch in range(3):
        net.forward()
        label = net.blobs["label"].data.copy()
        np.testing.assert_array_equal(label, file_labels[batch * 56:(batch + 1) * 56])   # read in file order
        np.testing.assert_array_equal(net.blobs["sim"].data, (label[:28] == label[28:]).astype(np.float32))
        assert net.blobs["sim"].data.sum() == 14
        np.testing.assert_allclose(np.linalg.norm(net.blobs["embedding"].data, axis=1), 1.0, rtol=1e-5)
    assert net.params["loss"][0].data.tolist() == [pytest.approx(1.2)]                 # beta, beta_init
