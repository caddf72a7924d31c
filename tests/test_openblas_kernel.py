"""scripts/openblas_kernel.py: the choice of OPENBLAS_CORETYPE, the detection on this machine, and that a forced
kernel computes what the default one does.

1. The decision is a pure function of (kernel OpenBLAS runs, CPU flags, DYNAMIC_ARCH, kernels the library knows,
   a preset value): a table of cases, the issue's Xeon among them.
2. The detection on this machine asks the OpenBLAS that the core links, and sets nothing where OpenBLAS runs its
   own choice; a simulated fallback gets its tuned kernel, checked by a GEMM in a child process, and a kernel the
   CPU cannot run is refused by that check.
3. Agreement: child processes with OPENBLAS_CORETYPE forced (the kernel the detection would choose for this CPU,
   and the generic Prescott) and one with the environment as it is run SGEMM through the same libopenblas and the
   HardNet core through the bindings on the same inputs. The variable is set only in those children.

Why not bit equality across kernels: each kernel sums the D products of a dot product in its own order and vector
width, with or without FMA, so GEMM entries differ in their last bits. Every order is within the same bound of the
exact value (|fl(a.b) - a.b| <= gamma_D |a|.|b|, gamma_D = D u / (1 - D u), u = 2^-24), so two kernels are
within twice that bound of each other: that is the SGEMM check. A mining decision compares distances: where two
candidates are closer than that rounding, kernels may pick differently, and both picks are right. The inputs are
chosen with every decision far from a tie (checked in float64 first), so there the picks must be equal.
"""
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "openblas_kernel.py"
_spec = importlib.util.spec_from_file_location("openblas_kernel", SCRIPT)
ok = sys.modules["openblas_kernel"] = importlib.util.module_from_spec(_spec)  # a script, not a package module
_spec.loader.exec_module(ok)

X86 = platform.machine() in ("x86_64", "AMD64")

# /proc/cpuinfo flags (the parts that matter, with their neighbours).
EPYC_HERE = ("fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c bmi1 avx2 bmi2 adx "
             "sha_ni clzero vaes vpclmulqdq")  # this machine: AMD EPYC (Zen), AVX2, no AVX-512
XEON_207 = ("fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f avx512dq avx512ifma avx512cd "
            "avx512bw avx512vl avx512vbmi avx512_bf16 amx_bf16 amx_tile amx_int8")  # family 6 model 207
HASWELL_CPU = "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2"
KNIGHTS_LANDING = HASWELL_CPU + " avx512f avx512cd avx512er avx512pf"  # AVX-512 F/CD only: no BW/DQ/VL
SANDY_BRIDGE = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt aes xsave avx"  # AVX, no AVX2, no FMA
WESTMERE = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt aes"
ALL_0_3_21 = {"Prescott", "Haswell", "SkylakeX", "Cooperlake", "Zen"}

CASES = [
    # (what, corename, flags, dynamic_arch, known cores, preset, expected coretype, words in the reason)
    ("this machine: EPYC, Zen kernel", "Zen", EPYC_HERE, True, ALL_0_3_21, None, None, "nothing to do"),
    ("the issue's Xeon: Prescott on AVX-512", "Prescott", XEON_207, True, ALL_0_3_21, None, "SkylakeX", "AVX-512"),
    ("AVX2-only CPU not recognised", "Prescott", HASWELL_CPU, True, ALL_0_3_21, None, "Haswell", "AVX2"),
    ("the EPYC if OpenBLAS fell back", "Prescott", EPYC_HERE, True, ALL_0_3_21, None, "Haswell", "generic Prescott"),
    ("names compare without case", "PRESCOTT", XEON_207, True, ALL_0_3_21, None, "SkylakeX", "AVX-512"),
    ("another pre-AVX kernel on AVX2", "Core2", HASWELL_CPU, True, ALL_0_3_21, None, "Haswell", "generic Core2"),
    ("Nehalem kernel on AVX-512", "Nehalem", XEON_207, True, ALL_0_3_21, None, "SkylakeX", "generic Nehalem"),
    ("AVX-512 without BW/DQ/VL", "Prescott", KNIGHTS_LANDING, True, ALL_0_3_21, None, "Haswell", "AVX2"),
    ("library without SkylakeX", "Prescott", XEON_207, True, {"Prescott", "Haswell"}, None, "Haswell", "AVX2"),
    ("library knows no tuned kernel", "Prescott", XEON_207, True, {"Prescott"}, None, None, "knows none"),
    ("CPU without AVX2: Sandy Bridge", "Prescott", SANDY_BRIDGE, True, ALL_0_3_21, None, None, "without AVX2"),
    ("CPU without AVX: Westmere", "Nehalem", WESTMERE, True, ALL_0_3_21, None, None, "without AVX2"),
    ("preset: never overridden", "Prescott", XEON_207, True, ALL_0_3_21, "Haswell", None, "already set"),
    ("preset to the generic kernel", "Prescott", XEON_207, True, ALL_0_3_21, "Prescott", None, "already set"),
    ("preset empty: still set", "Prescott", XEON_207, True, ALL_0_3_21, "", None, "already set"),
    ("not DYNAMIC_ARCH", "Prescott", XEON_207, False, ALL_0_3_21, None, None, "not DYNAMIC_ARCH"),
    ("Haswell on AVX-512: OpenBLAS's choice", "Haswell", XEON_207, True, ALL_0_3_21, None, None, "nothing to do"),
    ("Sandybridge on AVX2: AVX-era, left", "Sandybridge", HASWELL_CPU, True, ALL_0_3_21, None, None, "nothing"),
    ("SkylakeX already", "SkylakeX", XEON_207, True, ALL_0_3_21, None, None, "nothing to do"),
    ("Cooperlake already", "Cooperlake", XEON_207, True, ALL_0_3_21, None, None, "nothing to do"),
]


@pytest.mark.parametrize("what, corename, flags, dynamic, known, preset, expected, words", CASES,
                         ids=[case[0] for case in CASES])
def test_choice_table(what, corename, flags, dynamic, known, preset, expected, words):
    choice = ok.choose(corename, flags.split(), dynamic, known, preset)
    assert choice.coretype == expected, choice.reason
    assert words in choice.reason


def test_every_generic_kernel_on_avx2_gets_haswell_and_no_tuned_one_is_touched():
    for name in ok.GENERIC_CORES:
        assert ok.choose(name, HASWELL_CPU.split(), True, ALL_0_3_21, None).coretype == "Haswell", name
    for name in ("Sandybridge", "Bulldozer", "Piledriver", "Steamroller", "Excavator", "Haswell", "Zen",
                 "SkylakeX", "Cooperlake", "Unknown"):
        assert ok.choose(name, XEON_207.split(), True, ALL_0_3_21, None).coretype is None, name


def test_cpu_flags_read_the_first_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert ok.cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "fma"}
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm\n")  # aarch64: no x86 flags
    assert ok.cpu_flags(str(cpuinfo)) == frozenset()
    assert ok.cpu_flags(str(tmp_path / "missing")) == frozenset()


# ---------------------------------------------------------------------------------------------------------------
# 2. The detection on this machine

def _run_script(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env=env if env is not None else dict(os.environ))


def _require_dynamic_openblas():
    if not X86:
        pytest.skip("OpenBLAS's x86 kernel names: not an x86-64 machine")
    openblas = ok.inspect()
    if not openblas.dynamic_arch:
        pytest.fail(f"{openblas.path} is not a DYNAMIC_ARCH OpenBLAS ({openblas.config}): OPENBLAS_CORETYPE has "
                    f"no effect on it, so neither the detection nor this check can do anything here")
    return openblas


def test_detection_here_asks_the_openblas_the_core_links_and_follows_the_table():
    openblas = _require_dynamic_openblas()
    report = json.loads(_run_script("--json").stdout)
    assert report["library"] == openblas.path and report["corename"] == openblas.corename
    preset = os.environ.get(ok.VARIABLE)
    expected = ok.choose(openblas.corename, ok.cpu_flags(), True, openblas.known_cores, preset)
    assert report["choice"] == expected.coretype and report["reason"].startswith(expected.reason)
    # The bindings (and libcaffe, below) load that same file.
    code = ("import re, caffe_mining._core, os; print(sorted({os.path.realpath(l.split()[-1]) for l in "
            "open('/proc/self/maps') if re.match(r'libopenblas', os.path.basename(l.split()[-1]))}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert eval(done.stdout) == [openblas.path]
    shell = _run_script("--shell")
    if expected.coretype is None:  # what the set-up does where OpenBLAS knows the CPU: nothing, silently
        assert shell.stdout == "" and shell.stderr == ""


def test_libcaffe_links_the_same_openblas(caffe_bin):
    openblas = _require_dynamic_openblas()
    ldd = subprocess.run(["ldd", caffe_bin], capture_output=True, text=True, check=True).stdout
    linked = [line.split("=>")[1].split()[0] for line in ldd.splitlines() if "libopenblas" in line]
    assert [os.path.realpath(path) for path in linked] == [openblas.path]


def test_a_simulated_fallback_gets_its_tuned_kernel_checked(monkeypatch):
    """detect() with OpenBLAS's answer replaced by Prescott: the choice for this CPU is confirmed by a real GEMM
    in a child process; a kernel this CPU cannot run (AVX-512 claimed on a CPU without it) dies there (SIGILL)
    and is not set."""
    openblas = _require_dynamic_openblas()
    monkeypatch.delenv(ok.VARIABLE, raising=False)  # this process's copy of the environment only
    fallback = ok.OpenBlas(openblas.path, openblas.config.replace(openblas.corename, "Prescott"), "Prescott",
                           True, openblas.known_cores)
    monkeypatch.setattr(ok, "inspect", lambda library=ok.DEFAULT_LIBRARY: fallback)
    flags = ok.cpu_flags()
    report = ok.detect(environ={})
    expected = ok.choose("Prescott", flags, True, openblas.known_cores, None).coretype
    assert report.choice == expected
    if expected is not None:
        assert "checked" in report.reason and f"export {ok.VARIABLE}={expected}" in report.message()
    if not ok.AVX512 <= flags:
        lying = Path(os.environ.get("TMPDIR", "/tmp")) / f"cpuinfo-avx512-{os.getpid()}"
        lying.write_text("flags\t: " + XEON_207 + "\n")
        try:
            report = ok.detect(environ={}, cpuinfo=str(lying))
        finally:
            lying.unlink()
        assert report.choice is None and "SkylakeX failed its check" in report.reason, report.reason


def test_confirm_refuses_a_kernel_openblas_does_not_take():
    """A name OpenBLAS does not know runs another kernel (0.3.21: its own choice), and so does Cooperlake on a CPU
    without bfloat16: confirm() says so instead of letting the scripts claim a kernel that is not running."""
    _require_dynamic_openblas()
    assert "instead" in ok.confirm("NoSuchKernel")
    if "avx512_bf16" not in ok.cpu_flags():
        assert "instead" in ok.confirm("Cooperlake")
    assert ok.confirm("Prescott") is None  # every x86-64 runs it


def test_shell_mode_prints_an_export_line_and_one_message(monkeypatch, capsys):
    monkeypatch.setattr(ok, "detect", lambda library: ok.Report("/lib/libopenblas.so.0", "OpenBLAS 0.3.21 "
                        "DYNAMIC_ARCH Prescott", "Prescott", True, None, "SkylakeX", "OpenBLAS fell back to ..."))
    assert ok.main(["--shell"]) == 0
    out, err = capsys.readouterr()
    assert out == f"export {ok.VARIABLE}=SkylakeX {ok.FALLBACK_MARKER}=Prescott\n"
    assert err.count("\n") == 1 and f"export {ok.VARIABLE}=SkylakeX" in err


def test_the_scripts_set_it_for_what_they_run(tmp_path):
    """env.sh's function exports what --shell prints; test.sh and main.sh call it after building (OpenBLAS is
    installed by then) and before anything that runs BLAS."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "env.sh").write_text((REPO / "scripts" / "env.sh").read_text())
    (scripts / "openblas_kernel.py").write_text(
        "print('export OPENBLAS_CORETYPE=Haswell CAFFE_MINING_OPENBLAS_FALLBACK=Prescott')\n")
    env = {k: v for k, v in os.environ.items() if k not in (ok.VARIABLE, ok.FALLBACK_MARKER)}
    env["CAFFE_MINING_PYTHON"] = sys.executable
    show = f'source {scripts}/env.sh; CAFFE_MINING_PYTHON={sys.executable}; use_tuned_openblas_kernel; ' \
           'bash -c \'echo "$OPENBLAS_CORETYPE $CAFFE_MINING_OPENBLAS_FALLBACK"\''
    done = subprocess.run(["bash", "-c", show], capture_output=True, text=True, env=env)
    assert done.stdout == "Haswell Prescott\n", done.stderr
    for script, before in (("test.sh", "ctest"), ("main.sh", "models/siamese_digits/run.py")):
        text = (REPO / "scripts" / script).read_text()
        call = text.index("\nuse_tuned_openblas_kernel")
        assert text.index("scripts/build.sh") < call < text.index(before), script


def test_the_benchmark_sets_it_like_the_scripts(tmp_path, monkeypatch, capsys):
    """benchmarks.machine.use_tuned_openblas_kernel (run before OpenBLAS loads) sets the detection's choice in the
    environment it is given and says so; a value already there, preset or set by a script, is kept and named."""
    sys.path.insert(0, str(REPO))
    from benchmarks import machine

    stub = tmp_path / "openblas_kernel.py"
    stub.write_text("import json; print(json.dumps(dict(library='/lib/libopenblas.so.0', config='OpenBLAS 0.3.21 "
                    "DYNAMIC_ARCH Prescott', corename='Prescott', dynamic_arch=True, preset=None, choice='SkylakeX', "
                    "reason='OpenBLAS fell back to its generic Prescott kernel on a CPU with AVX-512')))\n")
    monkeypatch.setattr(machine, "OPENBLAS_KERNEL_SCRIPT", stub)
    environ = {}
    done = machine.use_tuned_openblas_kernel(environ)
    assert environ == {ok.VARIABLE: "SkylakeX", ok.FALLBACK_MARKER: "Prescott"}
    assert done["value"] == "SkylakeX" and "set by the benchmark's detection" in done["source"]
    assert f"export {ok.VARIABLE}=SkylakeX" in capsys.readouterr().err
    assert "set-up's detection (OpenBLAS had fallen back to Prescott)" in \
        machine.use_tuned_openblas_kernel(environ)["source"]
    preset = {ok.VARIABLE: "Haswell"}
    assert machine.use_tuned_openblas_kernel(preset) == {"value": "Haswell",
                                                         "source": "preset in the environment (left as it is)"}
    assert preset == {ok.VARIABLE: "Haswell"}


# ---------------------------------------------------------------------------------------------------------------
# 3. Agreement of a forced kernel with the default one

N, DIM = 96, 128
CONFIGS = [dict(), dict(anchor_swap=True), dict(batch_reduce="AVERAGE"), dict(batch_reduce="AVERAGE", anchor_swap=True),
           dict(batch_reduce="RANDOM", anchor_swap=True)]
CHILD = r"""
import ctypes, json, os, re, sys
import numpy as np
lib = ctypes.CDLL("libopenblas.so.0")
lib.openblas_get_corename.restype = ctypes.c_char_p
from caffe_mining import _core
inputs = np.load(sys.argv[1])
a, p, u = inputs["anchor"], inputs["positive"], inputs["uniforms"]
out = np.empty((len(a), len(p)), np.float32)
ptr = lambda x: x.ctypes.data_as(ctypes.c_void_p)
# RowMajor, NoTrans, Trans: out = a p^T, as the core's distance GEMM
lib.cblas_sgemm(101, 111, 112, len(a), len(p), a.shape[1], ctypes.c_float(1), ptr(a), a.shape[1], ptr(p),
                p.shape[1], ctypes.c_float(0), ptr(out), len(p))
saved = {"sgemm": out}
for k, config in enumerate(json.loads(sys.argv[3])):
    loss, grad_a, grad_p, neg_index, swapped = _core.hardnet_loss(a, p, uniforms=u, **config)[:5]
    saved.update({f"{k}_loss": np.float64(loss), f"{k}_grad_a": grad_a, f"{k}_grad_p": grad_p,
                  f"{k}_neg_index": neg_index, f"{k}_swapped": swapped})
np.savez(sys.argv[2], **saved)
mapped = {os.path.realpath(l.split()[-1]) for l in open("/proc/self/maps")
          if re.match(r"libopenblas", os.path.basename(l.split()[-1]))}
print(json.dumps({"corename": lib.openblas_get_corename().decode(), "openblas_files": sorted(mapped)}))
"""


def well_separated_batch(seed=1, gap=2e-4):
    """Unit anchors, positives about 0.6 away: every MIN pick (with and without anchor swap) leads the runner-up
    by >= gap, no distance is within gap of the duplicate threshold, no hinge within gap of its kink (checked in
    float64). Between two kernels a distance moves by at most 4 gamma_D / (2 D) (its 2 a.p term by twice the
    GEMM bound each way), under 3e-5 here: less than a fifth of the gap, so no kernel can reorder them."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((N, DIM))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    p = a + 0.06 * rng.standard_normal((N, DIM))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    a, p = a.astype(np.float32), p.astype(np.float32)
    d = np.sqrt(np.maximum(((a[:, None, :].astype(np.float64) - p[None, :, :]) ** 2).sum(-1), 0) + 1e-6)
    assert 4 * gemm_bound(a, p).max() / (2 * d.min()) < gap / 5
    off = d + np.diag(np.full(N, np.inf))
    for candidates in (off, np.minimum(off, off.T)):
        two = np.sort(candidates, axis=1)[:, :2]
        assert np.all(two[:, 1] - two[:, 0] >= gap)
        hinge = 1.0 + np.diag(d) - two[:, 0]
        assert np.all(np.abs(hinge) >= gap)
    assert np.all(np.abs(d - 0.008) >= gap)
    uniforms = rng.random(N)
    return a, p, uniforms


def gemm_bound(a, p):
    """gamma_D |a| |p|^T: how far any float32 summation order can be from the exact a p^T."""
    u = 2.0 ** -24
    gamma = DIM * u / (1 - DIM * u)
    return gamma * (np.abs(a.astype(np.float64)) @ np.abs(p.astype(np.float64)).T)


def test_forced_kernels_agree_with_the_default(tmp_path):
    openblas = _require_dynamic_openblas()
    a, p, uniforms = well_separated_batch()
    np.savez(tmp_path / "inputs.npz", anchor=a, positive=p, uniforms=uniforms)
    tuned = ok.choose("Prescott", ok.cpu_flags(), True, openblas.known_cores, None).coretype
    forced = [name for name in (tuned, "Prescott") if name is not None]
    runs = {}
    for label, coretype in [("default", None)] + [(name, name) for name in forced]:
        env = dict(os.environ)
        if coretype is not None:
            env[ok.VARIABLE] = coretype  # only in this child
        done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "inputs.npz"),
                               str(tmp_path / f"{label}.npz"), json.dumps(CONFIGS)],
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, f"{label}: {done.stderr[-2000:]}"
        info = json.loads(done.stdout)
        assert info["openblas_files"] == [openblas.path], info  # the bindings and ctypes share one OpenBLAS
        if coretype is not None:
            assert info["corename"].lower() == coretype.lower(), f"forcing {coretype} ran {info['corename']}"
        runs[label] = (info["corename"], dict(np.load(tmp_path / f"{label}.npz")))
    default_core, default = runs.pop("default")
    assert any(core.lower() != default_core.lower() for core, _ in runs.values()), \
        f"no forced kernel differs from the default {default_core}: nothing was compared"
    exact = a.astype(np.float64) @ p.astype(np.float64).T
    bound = gemm_bound(a, p)
    for label, (core, result) in runs.items():
        for name, sgemm in ((default_core, default["sgemm"]), (core, result["sgemm"])):
            assert np.all(np.abs(sgemm - exact) <= bound), f"{name}: SGEMM beyond gamma_D of the exact product"
        differ = int(np.sum(default["sgemm"] != result["sgemm"]))
        assert np.all(np.abs(result["sgemm"] - default["sgemm"]) <= 2 * bound), (core, differ)
        for k, config in enumerate(CONFIGS):
            what = f"{core} vs {default_core}, {config}"
            np.testing.assert_array_equal(result[f"{k}_neg_index"], default[f"{k}_neg_index"], err_msg=what)
            np.testing.assert_array_equal(result[f"{k}_swapped"], default[f"{k}_swapped"], err_msg=what)
            # Distances move by at most ~2 gamma_D (unit rows) between kernels; the loss is a mean of hinges of
            # them, the gradients sums of (a - p) / D terms: relative changes of that order.
            assert abs(result[f"{k}_loss"] - default[f"{k}_loss"]) <= 4 * bound.max() + 1e-7, what
            for grad in ("grad_a", "grad_p"):
                scale = np.abs(default[f"{k}_{grad}"]).max()
                np.testing.assert_allclose(result[f"{k}_{grad}"], default[f"{k}_{grad}"], rtol=1e-4,
                                           atol=1e-4 * scale, err_msg=f"{what} {grad}")


def test_the_sgemm_bound_refuses_a_wrong_gemm():
    """Planted: a GEMM that drops the last of the D products (a kernel's tail bug), or one entry off by 10 bounds,
    is outside the tolerance the agreement check allows."""
    a, p, _ = well_separated_batch()
    exact = a.astype(np.float64) @ p.astype(np.float64).T
    bound = gemm_bound(a, p)
    dropped = exact - np.outer(a[:, -1], p[:, -1])
    assert not np.all(np.abs(dropped - exact) <= 2 * bound)
    nudged = exact.copy()
    nudged[7, 11] += 10 * bound[7, 11]
    assert not np.all(np.abs(nudged - exact) <= 2 * bound)
