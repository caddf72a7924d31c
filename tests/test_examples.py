"""Tests of the worked examples (models/siamese_digits, models/hardnet_patches) and their helpers in
caffe_mining.examples: data builders, metrics, the caffe-log parser, and a few-iteration end-to-end run of
each example through the real ``caffe`` binary and pycaffe.

The end-to-end runs need a Caffe built with our layers. Without one they are skipped, unless
CAFFE_MINING_REQUIRE_CAFFE=1 (as CTest sets it), where a missing Caffe fails them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe_mining.examples import metrics
from caffe_mining.examples.caffe_log import parse_caffe_log
from caffe_mining.examples.digits import build_digits_data, load_digits_images, sample_pairs, split_by_sample
from caffe_mining.examples.pairs_hdf5 import read_pair_database, write_pair_database
from caffe_mining.examples.patches import (HELDOUT_PHOTOS, PATCH_SIZE, TRAIN_PHOTOS, build_patch_data,
                                           load_photo, make_patch_set, random_homography)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------- metrics
def test_roc_auc_hand_computed_with_a_tie():
    # positives at 0.1 and 0.5, negatives at 0.5 and 0.9: pairs (pos closer) = 1 + 1 + 0.5 (tie) + 1 = 3.5 of 4
    assert metrics.roc_auc([0.1, 0.5, 0.5, 0.9], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)


def test_roc_auc_matches_scikit_learn_on_random_scores_with_ties():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    distance = rng.integers(0, 20, 500).astype(float)  # many ties
    positive = rng.random(500) < 0.3
    expected = sklearn_metrics.roc_auc_score(positive, -distance)
    assert metrics.roc_auc(distance, positive) == pytest.approx(expected, abs=1e-12)


def test_fpr_at_recall_hand_computed():
    distance = np.array([0.1, 0.2, 0.3, 0.4, 0.15, 0.25, 0.35, 0.5])
    positive = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    # 95 % of 4 positives needs all 4: threshold 0.4 accepts negatives 0.15, 0.25, 0.35 -> 3/4
    assert metrics.fpr_at_recall(distance, positive, 0.95) == pytest.approx(0.75)
    # 50 % needs 2: threshold 0.2 accepts 0.15 -> 1/4
    assert metrics.fpr_at_recall(distance, positive, 0.5) == pytest.approx(0.25)


def test_perfect_separation_gives_auc_one_and_fpr_zero():
    distance = np.array([0.1, 0.2, 0.9, 1.0])
    positive = np.array([True, True, False, False])
    assert metrics.roc_auc(distance, positive) == 1.0
    assert metrics.fpr_at_recall(distance, positive) == 0.0


@pytest.mark.parametrize("distance, positive, message", [
    ([0.1, 0.2], [1, 1], "at least one positive and one negative"),
    ([0.1, np.nan], [1, 0], "NaN"),
    ([0.1, 0.2, 0.3], [1, 0], "same length"),
])
def test_metrics_reject_bad_input(distance, positive, message):
    with pytest.raises(ValueError, match=message):
        metrics.roc_auc(distance, positive)


def test_nearest_neighbour_accuracy_leave_one_out_and_gallery():
    points = np.array([[0.0], [0.1], [1.0], [1.05], [5.0]])
    labels = np.array([0, 0, 1, 1, 0])
    # the point at 5.0 finds 1.05 (label 1): 4 of 5 right; a row never finds itself
    assert metrics.nearest_neighbour_accuracy(points, labels) == pytest.approx(0.8)
    gallery, gallery_labels = np.array([[0.0], [1.0]]), np.array([1, 0])
    assert metrics.nearest_neighbour_accuracy(np.array([[0.1], [0.9]]), np.array([1, 1]), gallery,
                                              gallery_labels) == pytest.approx(0.5)


def test_pair_distances_and_upper_triangle():
    first, second = metrics.upper_triangle_pairs(4)
    assert len(first) == 6 and np.all(first < second)
    assert metrics.pair_distances(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]])) == pytest.approx([5.0])


# ------------------------------------------------------------------------------------------- caffe logs
CAFFE_LOG = """\
I1125 10:00:00.000001  4242 solver.cpp:218] Iteration 0 (0 iter/s, 0.01s/100 iters), loss = 0.5
I1125 10:00:00.000002  4242 solver.cpp:237]     Train net output #0: loss = 0.5 (* 1 = 0.5 loss)
I1125 10:00:00.000003  4242 solver.cpp:330] Iteration 0, Testing net (#0)
I1125 10:00:00.000004  4242 solver.cpp:397]     Test net output #0: heldout_contrastive = 0.4
I1125 10:00:00.000005  4242 solver.cpp:397]     Test net output #1: loss = 0.45 (* 1 = 0.45 loss)
I1125 10:00:01.000000  4242 solver.cpp:218] Iteration 100 (812.5 iter/s, 0.123s/100 iters), loss = 0.0421
I1125 10:00:01.000001  4242 solver.cpp:237]     Train net output #0: loss = 0.04 (* 1 = 0.04 loss)
I1125 10:00:01.000002  4242 sgd_solver.cpp:105] Iteration 100, lr = 0.00992565
I1125 10:00:02.000000  4242 solver.cpp:218] Iteration 200 (800 iter/s, 0.125s/100 iters), loss = -nan
I1125 10:00:03.000000  4242 solver.cpp:447] Snapshotting to binary proto file x_iter_200.caffemodel
I1125 10:00:03.000001  4242 solver.cpp:310] Iteration 200, loss = 3.5e-05
I1125 10:00:03.000002  4242 solver.cpp:330] Iteration 200, Testing net (#0)
I1125 10:00:03.000003  4242 solver.cpp:397]     Test net output #0: heldout_contrastive = 0.25
I1125 10:00:03.000004  4242 solver.cpp:315] Optimization Done.
"""


def test_parse_caffe_log_reads_train_test_and_final_lines():
    curves = parse_caffe_log(CAFFE_LOG.splitlines())
    assert [it for it, _ in curves.train_loss] == [0, 100, 200]
    assert curves.train_loss[1] == (100, pytest.approx(0.0421))
    assert np.isnan(curves.train_loss[2][1])  # a diverged run shows as NaN, not as a parse error
    assert curves.train_outputs["loss"] == [(0, 0.5), (100, pytest.approx(0.04))]
    assert curves.test_outputs["heldout_contrastive"] == [(0, 0.4), (200, 0.25)]
    assert curves.test_outputs["loss"] == [(0, 0.45)]
    assert curves.iterations_per_second[1] == (100, pytest.approx(812.5))
    assert curves.finished


def test_parse_caffe_log_final_line_adds_a_point_when_not_displayed(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("I1 solver.cpp:310] Iteration 250, loss = 0.125\n")
    curves = parse_caffe_log(log)
    assert curves.train_loss == [(250, 0.125)] and not curves.finished


# ---------------------------------------------------------------------------------------- pair databases
def test_pair_database_round_trip_split_over_files(tmp_path):
    pair_data = np.arange(5 * 2 * 3 * 3, dtype=np.float32).reshape(5, 2, 3, 3)
    paths = write_pair_database(tmp_path / "db.txt", pair_data, sim=[1, 0, 1, 0, 0], rows_per_file=2)
    assert len(paths) == 3
    assert (tmp_path / "db.txt").read_text().splitlines() == [str(p) for p in paths]
    read = read_pair_database(tmp_path / "db.txt")
    np.testing.assert_array_equal(read["pair_data"], pair_data)
    np.testing.assert_array_equal(read["sim"], [1, 0, 1, 0, 0])
    # a smaller database written over it leaves no stale part behind
    write_pair_database(tmp_path / "db.txt", pair_data[:1], sim=[1], rows_per_file=2)
    assert sorted(p.name for p in tmp_path.glob("db_*.h5")) == ["db_0.h5"]


def test_pair_database_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="N x 2 x H x W"):
        write_pair_database(tmp_path / "db.txt", np.zeros((4, 3, 2, 2)))
    with pytest.raises(ValueError, match="one value per pair"):
        write_pair_database(tmp_path / "db.txt", np.zeros((4, 2, 2, 2)), sim=[1, 0])


# ------------------------------------------------------------------------------------------------ digits
def test_digits_split_is_by_sample_stratified_and_disjoint():
    images, labels = load_digits_images()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    train, heldout = split_by_sample(labels, 0.3, seed=0)
    assert len(np.intersect1d(train, heldout)) == 0
    assert len(train) + len(heldout) == len(labels)
    for cls in range(10):  # every class held out in proportion (about 180 digits a class)
        members = np.flatnonzero(labels == cls)
        assert np.mean(np.isin(members, heldout)) == pytest.approx(0.3, abs=0.01)
    # the set has no duplicate images, so a disjoint split of indices is a disjoint split of digits
    train_rows = {row.tobytes() for row in images[train]}
    assert not any(row.tobytes() in train_rows for row in images[heldout])


def test_sample_pairs_labels_and_similar_fraction():
    labels = np.repeat(np.arange(10), 20)
    rng = np.random.default_rng(0)
    first, second, sim = sample_pairs(labels, 4000, rng)
    assert np.all(first != second)
    np.testing.assert_array_equal(sim, labels[first] == labels[second])
    assert 0.07 < sim.mean() < 0.13  # random pairs: about 1/10 similar (19/199 here)
    first, second, sim = sample_pairs(labels, 101, rng, similar_fraction=0.5)
    assert sim.sum() == 50 and np.all(first != second)
    np.testing.assert_array_equal(sim, labels[first] == labels[second])


def test_build_digits_data_shapes_and_no_heldout_image_in_training_pairs(tmp_path):
    data = build_digits_data(tmp_path, n_train_pairs=3000, n_heldout_pairs=400, log=lambda *_: None)
    train = read_pair_database(data.train_list)
    heldout = read_pair_database(data.heldout_list)
    assert train["pair_data"].shape == (3000, 2, 8, 8) and train["sim"].shape == (3000,)
    assert heldout["pair_data"].shape == (400, 2, 8, 8)
    assert data.heldout_images.shape == (data.meta["n_heldout_samples"], 8, 8)
    heldout_rows = {row.tobytes() for row in data.heldout_images}
    train_rows = {row.tobytes() for row in train["pair_data"].reshape(-1, 8, 8)}
    assert heldout_rows.isdisjoint(train_rows)
    assert {row.tobytes() for row in heldout["pair_data"].reshape(-1, 8, 8)} <= heldout_rows
    # sim says whether the two images of a pair show the same digit
    label_of = {row.tobytes(): label for row, label in zip(data.train_images, data.train_labels)}
    expected = [label_of[a.tobytes()] == label_of[b.tobytes()] for a, b in train["pair_data"]]
    np.testing.assert_array_equal(train["sim"], expected)
    # the same settings reuse the database; other settings rebuild it
    messages = []
    build_digits_data(tmp_path, n_train_pairs=3000, n_heldout_pairs=400, log=messages.append)
    build_digits_data(tmp_path, n_train_pairs=1000, n_heldout_pairs=400, log=messages.append)
    assert "reusing" in messages[0] and "writing" in messages[1]
    assert len(read_pair_database(data.train_list)["sim"]) == 1000


# ----------------------------------------------------------------------------------------------- patches
def test_training_and_heldout_photos_are_different_photos():
    assert not set(TRAIN_PHOTOS) & set(HELDOUT_PHOTOS)
    fingerprints = {name: load_photo(name)[::16, ::16].round(3).tobytes() for name in TRAIN_PHOTOS}
    for name in HELDOUT_PHOTOS:
        assert load_photo(name)[::16, ::16].round(3).tobytes() not in fingerprints.values(), name


def test_random_homography_moves_the_centre_by_at_most_its_shift():
    rng = np.random.default_rng(0)
    for _ in range(20):
        homography = random_homography((200, 300), rng)
        centre = homography(np.array([[150.0, 100.0]]))[0]
        # perspective terms act on centred coordinates: the centre only shifts (<= 10 px each way)
        assert np.all(np.abs(centre - [150.0, 100.0]) <= 10.0 + 1e-9)


def _normalised_correlation(a, b):
    a = (a - a.mean(axis=(1, 2), keepdims=True)) / (a.std(axis=(1, 2), keepdims=True) + 1e-6)
    b = (b - b.mean(axis=(1, 2), keepdims=True)) / (b.std(axis=(1, 2), keepdims=True) + 1e-6)
    return np.mean(a * b, axis=(1, 2))


def test_patch_pairs_show_the_same_place_under_the_warp():
    patches = make_patch_set(("camera", "coins"), max_keypoints=60, n_warps=2, seed=0)
    assert patches.reference.shape == patches.target.shape == (len(patches), PATCH_SIZE, PATCH_SIZE)
    assert patches.reference.dtype == np.uint8
    assert len(patches) > 100
    # one id per (photo, keypoint): ids never cross photos, and each appears once per warp at most
    for key in np.unique(patches.keypoint_id):
        rows = patches.keypoint_id == key
        assert len(np.unique(patches.photo_index[rows])) == 1
        assert len(np.unique(patches.warp_index[rows])) == rows.sum()
    reference = patches.reference.astype(float)
    target = patches.target.astype(float)
    matching = _normalised_correlation(reference, target)
    shuffled = _normalised_correlation(reference, np.roll(target, 7, axis=0))
    # a wrong (x, y) order or a wrong direction of the homography would make these alike
    assert np.median(matching) > 0.5
    assert np.median(matching) > np.median(shuffled) + 0.4


def test_build_patch_data_writes_train_and_heldout_databases(tmp_path):
    data = build_patch_data(tmp_path, max_keypoints=40, n_warps=2, heldout_max_keypoints=30, heldout_warps=2,
                            train_photos=("camera", "brick"), heldout_photos=("astronaut",), log=lambda *_: None)
    train = read_pair_database(data.train_list)
    heldout = read_pair_database(data.heldout_list)
    assert train["pair_data"].shape == (data.meta["n_train_pairs"], 2, PATCH_SIZE, PATCH_SIZE)
    assert train["pair_data"].dtype == np.uint8 and train["label"].shape == (data.meta["n_train_pairs"],)
    assert heldout["pair_data"].shape == (len(data.heldout), 2, PATCH_SIZE, PATCH_SIZE)
    # keypoint ids of held-out pairs never occur in training, and no held-out patch is a training patch
    assert set(train["label"].tolist()).isdisjoint(heldout["label"].tolist())
    train_patches = {patch.tobytes() for patch in train["pair_data"].reshape(-1, PATCH_SIZE, PATCH_SIZE)}
    assert not any(patch.tobytes() in train_patches for patch in data.heldout.reference)
    np.testing.assert_array_equal(heldout["pair_data"][:, 0], data.heldout.reference)
    with pytest.raises(ValueError, match="both in training and held out"):
        build_patch_data(tmp_path, train_photos=("camera",), heldout_photos=("camera",), log=lambda *_: None)


# ----------------------------------------------------------------------------------- end to end, with Caffe
def _caffe_or_skip():
    """(caffe binary, environment with pycaffe importable), or skip / fail as the module docstring says."""
    from caffe_mining.examples.caffe_run import CaffeNotFound, find_caffe_binary, import_pycaffe

    try:
        caffe_bin = find_caffe_binary()
        caffe = import_pycaffe()
    except CaffeNotFound as missing:
        if os.environ.get("CAFFE_MINING_REQUIRE_CAFFE") == "1":
            pytest.fail(f"CAFFE_MINING_REQUIRE_CAFFE=1 but: {missing}")
        pytest.skip(str(missing))
    env = dict(os.environ)
    pycaffe_dir = str(Path(caffe.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pycaffe_dir, str(REPO / "python"), env.get("PYTHONPATH", "")])
    env["CAFFE_MINING_CAFFE_BIN"] = str(caffe_bin)
    return caffe_bin, env


def _run_example(script: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
    completed = subprocess.run([sys.executable, str(REPO / "models" / script), *args], env=env,
                               capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def _check_results(results_dir: Path, variants: set[str], metric_names: list[str], pngs: list[str]):
    results = json.loads((results_dir / "results.json").read_text())
    assert {run["variant"] for run in results["runs"]} == variants
    for run in results["runs"]:
        assert run["curves"]["train_loss"], run["variant"]  # progress lines were parsed from the caffe log
        assert len(run["snapshots"]) == 2
        for name in metric_names:
            assert 0.0 <= run["final"][name] <= 1.0
    for png in pngs:
        assert (results_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return results


def test_render_run_sets_the_loss_layer_sources_and_seed(tmp_path):
    _caffe_or_skip()
    from caffe_mining.examples.caffe_run import read_prototxt
    from caffe_mining.examples.experiment import Variant, render_run

    variant = Variant("mining2", "ratio 2", "MiningContrastiveLoss",
                      "contrastive_loss_param { margin: 0.5 mining_ratio: 2 }")
    example = REPO / "models" / "siamese_digits"
    solver_path = render_run(example / "train_val.prototxt", example / "solver.prototxt", variant, 7,
                             tmp_path / "run", {"TRAIN": tmp_path / "a.txt", "TEST": tmp_path / "b.txt"},
                             {"max_iter": 33})
    solver = read_prototxt(solver_path, "SolverParameter")
    assert (solver.random_seed, solver.max_iter) == (7, 33)
    assert solver.snapshot_prefix == str((tmp_path / "run" / "snapshots" / "mining2").resolve())
    net = read_prototxt(solver.net)
    loss = next(layer for layer in net.layer if layer.name == "loss")
    assert loss.type == "MiningContrastiveLoss"
    assert (loss.contrastive_loss_param.margin, loss.contrastive_loss_param.mining_ratio) == (0.5, 2)
    sources = {layer.include[0].phase: layer.hdf5_data_param.source for layer in net.layer
               if layer.type == "HDF5Data"}
    assert sources == {0: str((tmp_path / "a.txt").resolve()), 1: str((tmp_path / "b.txt").resolve())}


def test_siamese_digits_trains_with_caffe_and_evaluates(tmp_path):
    _, env = _caffe_or_skip()
    completed = _run_example("siamese_digits/run.py",
                             ["--iterations", "40", "--snapshot-every", "20", "--seeds", "1",
                              "--train-pairs", "2000", "--data-dir", str(tmp_path / "data"),
                              "--out", str(tmp_path / "runs")], env)
    assert "Iteration 20" in completed.stdout  # caffe's progress reaches the console
    _check_results(tmp_path / "runs" / "results", {"contrastive", "mining2", "mining4"},
                   ["roc_auc", "fpr95", "nn_accuracy"], ["loss_curves.png", "heldout_metrics.png",
                                                          "projection.png"])


def test_hardnet_patches_trains_with_caffe_and_evaluates(tmp_path):
    _, env = _caffe_or_skip()
    completed = _run_example("hardnet_patches/run.py",
                             ["--iterations", "10", "--snapshot-every", "5", "--seeds", "1", "--tiny",
                              "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "runs")], env)
    assert "Iteration 10" in completed.stdout
    _check_results(tmp_path / "runs" / "results", {"hardnet_min", "random"}, ["fpr95", "matching_accuracy"],
                   ["loss_curves.png", "heldout_metrics.png", "distances.png", "projection.png"])


def test_default_folders_follow_the_cache_and_data_variables(monkeypatch, tmp_path):
    from caffe_mining.examples import caffe_run

    monkeypatch.delenv("CAFFE_MINING_BUILD_DIR", raising=False)
    monkeypatch.delenv("CAFFE_MINING_DATA", raising=False)
    monkeypatch.setenv("CAFFE_MINING_CACHE", str(tmp_path / "cache"))
    assert caffe_run.default_build_dir() == tmp_path / "cache" / "build-cpu"
    assert caffe_run.data_dir("x") == tmp_path / "cache" / "data" / "x"
    monkeypatch.setenv("CAFFE_MINING_DATA", str(tmp_path / "data"))
    assert caffe_run.data_dir("x") == tmp_path / "data" / "x"


def test_an_explicit_caffe_path_that_is_wrong_is_an_error(tmp_path, monkeypatch):
    from caffe_mining.examples.caffe_run import CaffeNotFound, find_caffe_binary

    with pytest.raises(CaffeNotFound, match="--caffe"):
        find_caffe_binary(tmp_path / "no-such-caffe")
    monkeypatch.setenv("CAFFE_MINING_CAFFE_BIN", str(tmp_path / "missing"))
    with pytest.raises(CaffeNotFound, match="CAFFE_MINING_CAFFE_BIN"):
        find_caffe_binary()


def test_summary_and_markdown_table_over_seeds():
    from caffe_mining.examples.experiment import Variant, markdown_table, summarise

    variants = [Variant("a", "A", "ContrastiveLoss", ""), Variant("b", "B", "ContrastiveLoss", "")]
    runs = [{"variant": "a", "seed": seed, "wall_seconds": 10.0 * seed,
             "final": {"iteration": 100, "fpr95": value, "roc_auc": 0.5}}
            for seed, value in ((1, 0.01), (2, 0.03))]
    rows = summarise(runs, variants, ["fpr95", "roc_auc"])
    assert len(rows) == 1 and rows[0]["seeds"] == [1, 2]  # a variant without runs is left out
    assert rows[0]["fpr95"]["mean"] == pytest.approx(0.02)
    assert rows[0]["fpr95"]["std"] == pytest.approx(np.std([0.01, 0.03], ddof=1))
    table = markdown_table(rows, {"fpr95": "FPR95", "roc_auc": "AUC"}, percent=("fpr95",))
    assert table.splitlines()[2] == "| A | 1,2 | 100 | 2.00 ± 1.41 % | 0.5000 ± 0.0000 | 15 ± 7 |"


def test_driver_arguments_fill_quick_and_cache_defaults(monkeypatch, tmp_path):
    from caffe_mining.examples.driver import RunLengths, example_parser, resolve_arguments
    from caffe_mining.examples.experiment import Variant

    monkeypatch.setenv("CAFFE_MINING_CACHE", str(tmp_path))
    monkeypatch.delenv("CAFFE_MINING_DATA", raising=False)
    lengths = RunLengths(iterations=100, snapshot_every=10, quick_iterations=20, quick_snapshot_every=5)
    variants = [Variant("a", "A", "ContrastiveLoss", ""), Variant("b", "B", "ContrastiveLoss", "")]
    parser = example_parser("doc", "ex", variants, lengths, base_lr=0.1)
    full = resolve_arguments(parser.parse_args([]), "ex", lengths)
    assert (full.seeds, full.iterations, full.snapshot_every, full.variants) == ([1, 2, 3], 100, 10, ["a", "b"])
    assert (full.out, full.results, full.data_dir) == (tmp_path / "runs" / "ex", tmp_path / "runs" / "ex" / "results",
                                                       tmp_path / "data" / "ex")
    quick = resolve_arguments(parser.parse_args(["--quick", "--iterations", "7"]), "ex", lengths, data_name="ex-tiny")
    assert (quick.seeds, quick.iterations, quick.snapshot_every) == ([1], 7, 5)
    assert (quick.out, quick.data_dir) == (tmp_path / "runs" / "ex-quick", tmp_path / "data" / "ex-tiny")
    with pytest.raises(SystemExit):
        parser.parse_args(["--variants", "c"])
