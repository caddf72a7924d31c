"""Smoke test of the benchmark (`python -m benchmarks run --smoke`): the smallest size of each suite.

No timing assertions (this machine is shared and noisy). What is checked: the command runs, prints the tables and
writes results.md/.json and the PNG; every implementation's loss matches the NumPy reference computed here
independently; MiningContrastiveLoss with mining_ratio 1 gives Caffe's ContrastiveLoss value; every HardNet mining
configuration runs through the core and the layer with the reference's loss for the same options and uniforms; the
results name the OpenBLAS kernel the run used; the memory probe sees at least the buffers the core is known to
allocate; a disagreeing implementation fails the run.
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmarks/ is a folder of the repository, not an installed package

import caffe_mining  # noqa: E402
from benchmarks import inputs, report, runners  # noqa: E402

HARDNET_N, CONTRASTIVE_N, DIM = 128, 1024, 128


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, caffe_with_layers):
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--smoke", "--no-torch", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    return SimpleNamespace(done=done, out=out, results=json.loads((out / "results.json").read_text())
                           if (out / "results.json").exists() else None)


def test_command_succeeds_and_prints_the_tables(smoke_run):
    assert smoke_run.done.returncode == 0, smoke_run.done.stderr[-3000:]
    stdout = smoke_run.done.stdout
    assert "| N | implementation | median | IQR | × SGEMM | × PyTorch | loss |" in stdout
    assert "| N | implementation | median | IQR | × ContrastiveLoss | × multimaps (same r) | loss |" in stdout
    for name in (runners.HARDNET_FLOOR, runners.HARDNET_CAFFE, runners.CONTRASTIVE_CAFFE,
                 runners.mining_layer_name(4), runners.multimap_name(2), runners.mining_core_name(1)):
        assert f"| {name} |" in stdout
    assert "disagrees" not in stdout
    assert (smoke_run.out / "results.md").read_text() in stdout


def test_plot_is_a_png(smoke_run):
    png = (smoke_run.out / "time_vs_n.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_hardnet_losses_match_the_reference(smoke_run):
    anchor, positive = inputs.hardnet_batch(HARDNET_N, DIM)
    expected = caffe_mining.reference.hardnet_loss(anchor.astype(np.float64), positive.astype(np.float64)).loss
    rows = [r for r in smoke_run.results["hardnet"] if r["loss"] is not None]
    assert {r["impl"] for r in rows} >= {"core (C++, buffers reused)", "core via bindings", runners.HARDNET_CAFFE}
    for row in rows:
        assert row["n"] == HARDNET_N
        assert row["loss"] == pytest.approx(expected, rel=1e-5), row["impl"]
        assert row["agrees"] is True
    assert expected > 0.1  # the batch really exercises the hinge


def test_contrastive_losses_match_the_reference(smoke_run):
    feat, feat_p, sim = inputs.contrastive_batch(CONTRASTIVE_N, DIM)
    rows = smoke_run.results["contrastive"]
    for ratio in (1, 2, 4):
        expected = caffe_mining.reference.mining_contrastive_loss(feat, feat_p, sim, mining_ratio=ratio).loss
        mine = [r for r in rows if r["mining_ratio"] == ratio]
        assert len(mine) == 3, [r["impl"] for r in mine]  # layer, core, multimaps
        for row in mine:
            assert row["loss"] == pytest.approx(expected, rel=1e-5), row["impl"]
    losses = {r["impl"]: r["loss"] for r in rows}
    # Mining harder pairs raises the mean cost: the ratios really differ.
    assert losses[runners.mining_layer_name(1)] < losses[runners.mining_layer_name(2)] < \
        losses[runners.mining_layer_name(4)]
    assert losses[runners.mining_layer_name(1)] == pytest.approx(losses[runners.CONTRASTIVE_CAFFE], rel=1e-6)


def test_ratios_are_against_the_named_baselines(smoke_run):
    for row in smoke_run.results["hardnet"]:
        if row["impl"] == runners.HARDNET_FLOOR:
            assert row["vs_floor"] == 1.0
        assert row["vs_floor"] == pytest.approx(np.median(
            [t / b for t, b in zip(row["seconds"], next(
                r for r in smoke_run.results["hardnet"] if r["impl"] == runners.HARDNET_FLOOR)["seconds"])]))
    for row in smoke_run.results["contrastive"]:
        if row["impl"] == runners.CONTRASTIVE_CAFFE:
            assert row["vs_caffe"] == 1.0
        if row["impl"].startswith("sorted multimaps"):
            assert row["vs_multimap"] == 1.0


def test_memory_probe_sees_the_core_buffers(smoke_run, caffe_with_layers):
    lib = runners.Context(runners.native.load(), None, None).lib
    handle = runners.native.NativeHandle(lib, "hardnet", HARDNET_N, 0, runners.BATCH_REDUCE_CODES["MIN"])
    buffers = lib.bench_hardnet_bytes(handle.pointer)
    assert buffers >= HARDNET_N * HARDNET_N * 4  # the distance matrix
    memory = {(r["loss"], r["impl"], r["mining_ratio"]): r for r in smoke_run.results["memory"]}
    core = memory[("hardnet", "core (C++, buffers reused)", None)]
    assert core["extra_bytes"] >= buffers
    assert core["io_bytes"] == 2 * HARDNET_N * DIM * 4  # its gradients
    layer = memory[("contrastive", runners.mining_layer_name(2), 2)]
    assert layer["extra_bytes"] >= CONTRASTIVE_N * DIM * 4  # the layer keeps a - b


def test_a_disagreeing_implementation_fails_the_run(tmp_path, monkeypatch, caffe_with_layers):
    from benchmarks import run as run_module

    real = runners.contrastive_reference_loss
    monkeypatch.setattr(runners, "contrastive_reference_loss", lambda n, dim, ratio: real(n, dim, ratio) * 1.01)
    args = SimpleNamespace(threads=1, no_torch=True, dim=DIM, rounds=1, warmup=0, clock="cpu", min_sample=0.001,
                           smoke=True, suite="contrastive", hardnet_sizes=[], contrastive_sizes=[256], ratios=[2],
                           config_sizes=[], no_memory=True, out=str(tmp_path), update_readme=False)
    assert run_module.run(args) == 1
    assert "**disagrees**" in (tmp_path / "results.md").read_text()


def test_every_configuration_runs_through_core_and_layer_with_the_reference_loss(smoke_run):
    assert "| N | configuration | SGEMM (floor) | core (C++, buffers reused) | × SGEMM |" in smoke_run.done.stdout
    rows = smoke_run.results["hardnet_configs"]
    anchor, positive = (x.astype(np.float64) for x in inputs.hardnet_batch(HARDNET_N, DIM))
    floor = next(r for r in rows if r["path"] == "floor")
    assert floor["impl"] == runners.HARDNET_FLOOR and floor["vs_floor"] == 1.0
    labels = set()
    for reduce in ("MIN", "RANDOM", "AVERAGE"):
        for swap in (False, True):
            # The layer's first RANDOM draws: mt19937 seeded with the net's seed (1), as sampling.py reproduces.
            uniforms = caffe_mining.LayerUniforms(1).next(HARDNET_N) if reduce == "RANDOM" else None
            expected = caffe_mining.reference.hardnet_loss(anchor, positive, anchor_swap=swap, batch_reduce=reduce,
                                                           uniforms=uniforms).loss
            mine = [r for r in rows if r["config"] == reduce + (" + anchor_swap" if swap else "")]
            assert {r["path"] for r in mine} == {"core", "layer"}, mine
            for row in mine:
                assert row["n"] == HARDNET_N and row["agrees"] is True
                assert row["loss"] == pytest.approx(expected, rel=1e-5), row["impl"]
                assert row["vs_floor"] == pytest.approx(np.median([t / b for t, b in zip(row["seconds"],
                                                                                        floor["seconds"])]))
                labels.add(row["loss"])
    assert len(labels) >= 5  # the configurations really differ


def test_results_name_the_openblas_kernel_and_the_variable(smoke_run):
    """The kernel is the one the detection leaves OpenBLAS with: its choice where it sets one, else OpenBLAS's own
    (or a preset value's); stdout says it and where OPENBLAS_CORETYPE came from."""
    detection = json.loads(subprocess.run([sys.executable, str(REPO / "scripts" / "openblas_kernel.py"), "--json"],
                                          capture_output=True, text=True, check=True).stdout)
    machine = smoke_run.results["machine"]
    assert machine["openblas_kernel"] == (detection["choice"] or detection["corename"])
    assert f"OpenBLAS kernel **{machine['openblas_kernel']}**" in smoke_run.done.stdout
    coretype = machine["openblas_coretype"]
    assert coretype["value"] == (os.environ.get("OPENBLAS_CORETYPE") or detection["choice"])
    if os.environ.get("OPENBLAS_CORETYPE") is not None:
        assert "preset" in coretype["source"] or "set-up's detection" in coretype["source"]
    assert coretype["source"] in smoke_run.done.stdout


def test_verdicts_name_a_missed_target():
    rows = [{"impl": runners.HARDNET_CAFFE, "n": 1024, "vs_floor": 1.5, "vs_torch": 0.5, "agrees": True}]
    lines = report.verdicts(rows, [])
    assert any("1.50×" in line and "MISSED" in line for line in lines)
    assert any("2.00× faster" in line and "MISSED" in line for line in lines)
    config_rows = [dict(n=n, config=config, path=path, vs_floor=ratio) for n, config, path, ratio in (
        (1024, "MIN + anchor_swap", "core", 1.2), (1024, "MIN + anchor_swap", "layer", 1.31),
        (2048, "AVERAGE", "core", 3.2), (128, "RANDOM", "core", 9.0))]
    lines = report.config_verdicts(config_rows)
    assert lines[0].startswith("- MIN + anchor_swap ≤ 1.3× one SGEMM: core N=1024: 1.20×; layer N=1024: 1.31×")
    assert lines[0].endswith("MISSED")
    assert lines[1].startswith("- AVERAGE ≤ 3.3×") and lines[1].endswith("met")
    assert len(lines) == 2  # RANDOM only below N = 512: no target there
    assert report.config_verdicts(config_rows[3:]) == ["- none: no N ≥ 512 in this run"]


def test_revisions_times_every_loss_configuration_and_checks_its_bits():
    """`python -m benchmarks revisions` compares two cores on every configuration of the four losses' kit: here the
    core against itself (same bits by construction), and against a core whose triplet loss is off by one ulp."""
    from benchmarks import revisions
    from caffe_mining import _core

    configs = revisions.configurations([16], [64], 8, [16])
    names = [name for name, _ in configs]
    assert sum(name.startswith("HardNet") for name in names) == len(revisions.HARDNET_CONFIGS) == 6
    assert sum(name.startswith("MiningContrastive") for name in names) == 3
    assert sum(name.startswith("Triplet") for name in names) == len(revisions.TRIPLET_CONFIGS) == 6
    rows = revisions.compare(_core, _core, configs, rounds=1, warmup=0, min_sample=0.0)
    assert all(row["same_bits"] for row in rows)

    class OffByOneUlp:
        def __getattr__(self, name):
            return getattr(_core, name)

        def triplet_loss(self, *args, **kwargs):
            loss, *rest = _core.triplet_loss(*args, **kwargs)
            return (np.nextafter(loss, np.inf), *rest)

    triplet_rows = revisions.compare(_core, OffByOneUlp(), [c for c in configs if c[0].startswith("Triplet")],
                                     rounds=1, warmup=0, min_sample=0.0)
    assert not any(row["same_bits"] for row in triplet_rows)
