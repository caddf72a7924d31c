#!/usr/bin/env python3
"""The sanitizer check: the Caffe-free core and its bindings built with -fsanitize=address,undefined, the bindings'
tests run on that build, then a short fuzz of valid and invalid calls, each call in a process of its own.

    python3 scripts/sanitize.py --build-dir DIR          # what CTest's `sanitizers` test runs (CI)
    python3 scripts/sanitize.py --build-dir DIR --cases 500 --seed 7   # a longer fuzz

The build (setup.py's extension with CFLAGS/LDFLAGS, in DIR, not in the clone) is redone only for changed
sources. Python itself is not instrumented, so the ASan runtime is preloaded (LD_PRELOAD); leak detection is off
(CPython keeps its objects to the end). Any sanitizer report aborts its process (halt_on_error, abort_on_error).

A fuzz case passes when the call returns, or raises a Python exception (the bindings' checks); it fails when its
process dies (a signal, an abort, a sanitizer report) or prints a sanitizer report. The fuzz also fails when
fewer than a quarter of its valid-input cases return a result: a fuzz that only meets errors proves nothing.
Exit status: 0 clean, 1 a finding or a failed test, 2 the build failed.
"""
import argparse
import os
import shlex
import subprocess
import sys
import sysconfig
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZE_FLAGS = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"
TESTS = ["tests/test_bindings.py", "tests/test_hardnet_min_rounding.py", "tests/test_reference.py",
         "tests/test_triplet.py"]
REPORT_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer", "SUMMARY: UndefinedBehavior")
MIN_VALID_RETURNING = 0.25


def build(build_dir):
    """setup.py's extension and package, sanitized, into build_dir/lib; returns that folder."""
    lib = os.path.join(build_dir, "lib")
    # CAFFE_MINING_CUDA=0: the CPU bindings only (the CUDA ones are not what is sanitized here, and take nvcc time).
    env = dict(os.environ, CFLAGS=SANITIZE_FLAGS, LDFLAGS="-fsanitize=address,undefined", CAFFE_MINING_CUDA="0")
    command = [sys.executable, "setup.py", "-q", "build", "--build-base", os.path.join(build_dir, "build"),
               "--build-lib", lib, "--build-temp", os.path.join(build_dir, "temp")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        return None
    return lib


def preloads():
    """libasan.so and libstdc++.so of the compiler that builds extensions (the one setup.py used).

    ASan must be the first library loaded; libstdc++ comes right after it, so that ASan's interceptor of C++ throws
    finds the real __cxa_throw (python itself does not link libstdc++: without it every exception aborts).
    """
    compiler = shlex.split(sysconfig.get_config_var("CC") or "gcc")[0]
    paths = []
    for name in ("libasan.so", "libstdc++.so"):
        path = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(path) or not os.path.exists(path):
            raise SystemExit(f"sanitize: {compiler} has no {name} ({path!r}): install its sanitizer runtime")
        paths.append(os.path.realpath(path))
    return " ".join(paths)


def sanitized_env(lib):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([lib, *filter(None, [os.environ.get("PYTHONPATH")])]),
               LD_PRELOAD=preloads(),
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1",
               UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1")
    env.pop("PYTHONSTARTUP", None)
    return env


def has_report(text):
    return any(marker in text for marker in REPORT_MARKERS)


# ---------------------------------------------------------------------------------------------------------------
# Fuzz cases: each one a deterministic function of (seed, index), drawn again in the child that runs it.

def draw_case(seed, index):
    """(function name, args, kwargs, valid) of fuzz case index: valid cases have every input as documented."""
    import numpy as np

    rng = np.random.default_rng([seed, index])
    fn = ["mining_contrastive_loss", "hardnet_loss", "mining_contrastive_loss", "triplet_loss"][index % 4]
    valid = index % 3 != 0  # two thirds valid, one third with one thing wrong
    dtype = [np.float32, np.float64][int(rng.integers(2))]
    n = int(rng.choice([1, 2, 3, 5, 8, 17, 64, 130]))
    dim = int(rng.choice([1, 2, 3, 4, 7, 16, 33]))
    if fn == "hardnet_loss":
        n = max(n, 2)
    scale = float(rng.choice([1e-3, 0.3, 1.0, 10.0]))
    a = (rng.normal(size=(n, dim)) * scale).astype(dtype)
    b = (a + 0.3 * rng.normal(size=(n, dim)) * scale).astype(dtype)
    if rng.random() < 0.3:  # exact duplicates and ties
        a[n // 2:] = a[0]
        b[n // 2:] = b[0]
    if rng.random() < 0.3:  # strided views: the bindings must copy them, not read past them
        a = np.repeat(a, 2, axis=1)[:, ::2]
    backward = bool(rng.random() < 0.8)
    if fn == "mining_contrastive_loss":
        third = rng.integers(0, 2, size=n).astype(dtype)
        kwargs = dict(margin=float(rng.choice([0.0, 0.5, 1.0, 2.0])), legacy_version=bool(rng.random() < 0.3),
                      mining_ratio=int(rng.choice([1, 2, 3, 4, n, n + 1])), backward=backward)
    elif fn == "triplet_loss":
        third = rng.integers(0, max(1, n // 3), size=n).astype(dtype)
        kwargs = dict(margin=float(rng.choice([0.0, 0.2, 1.0])), soft_margin=bool(rng.random() < 0.3),
                      squared=bool(rng.random() < 0.3),
                      mining=str(rng.choice(["BATCH_HARD", "BATCH_ALL", "SEMI_HARD"])),
                      eps=float(rng.choice([1e-12, 1e-6])), backward=backward)
    else:
        third = rng.integers(0, max(1, n // 2), size=n).astype(dtype) if rng.random() < 0.5 else None
        batch_reduce = str(rng.choice(["MIN", "AVERAGE", "RANDOM"]))
        kwargs = dict(margin=float(rng.choice([0.0, 1.0, 2.0])), anchor_swap=bool(rng.random() < 0.5),
                      batch_reduce=batch_reduce,
                      loss_type=str(rng.choice(["TRIPLET_MARGIN", "SOFTMAX", "CONTRASTIVE"])),
                      eps=float(rng.choice([1e-8, 1e-6, 1e-3])),
                      duplicate_threshold=float(rng.choice([0.0, 0.008, 0.5])), backward=backward)
        if batch_reduce == "RANDOM":
            kwargs["uniforms"] = rng.random(n)
    args = [a, b, third]
    if not valid:
        break_one(rng, fn, args, kwargs, n, dim, dtype)
    if fn == "triplet_loss":  # one feature bottom: a break of the second one leaves the case valid in fact
        args = [args[0], args[2]]
    return fn, args, kwargs, valid


def break_one(rng, fn, args, kwargs, n, dim, dtype):
    """Make one input wrong (or extreme) in one of many ways."""
    import numpy as np

    bad_values = [np.nan, np.inf, -np.inf, 1e30, 1e200, 1e-45, -0.0]
    ways = [
        lambda: args.__setitem__(0, args[0][:-1]),                           # rows differ
        lambda: args.__setitem__(1, args[1][:, :-1] if dim > 1 else args[1][:, :0]),  # columns differ
        lambda: args.__setitem__(0, args[0].reshape(-1)),                    # 1-D
        lambda: args.__setitem__(0, args[0][None]),                          # 3-D
        lambda: args.__setitem__(0, args[0][:0]),                            # N = 0
        lambda: args.__setitem__(0, np.zeros((n, 0), dtype)),                # D = 0
        lambda: args.__setitem__(1, np.zeros((n, 0), dtype)),
        lambda: args.__setitem__(0, args[0].astype(np.int64)),               # integer features
        lambda: args.__setitem__(0, args[0].astype(np.complex128)),
        lambda: args.__setitem__(0, args[0].astype(object)),
        lambda: args.__setitem__(0, "not an array"),
        lambda: args.__setitem__(0, None),
        lambda: args.__setitem__(1, args[1].astype(np.float16)),
        lambda: args.__setitem__(2, np.zeros(n + 1)),                        # third bottom of another length
        lambda: args.__setitem__(2, np.full(n, float(rng.choice(bad_values)))),
        lambda: args.__setitem__(2, np.full(n, 2.0 ** 62)),
        lambda: args.__setitem__(2, np.zeros((n, 2))),
        lambda: args[0].__setitem__((int(rng.integers(len(args[0]))), 0), rng.choice(bad_values)),
        lambda: args.__setitem__(0, np.full_like(args[0], rng.choice(bad_values))),
        lambda: kwargs.__setitem__("check_finite", False) or args[0].__setitem__((0, 0), np.nan),
        lambda: kwargs.__setitem__("check_finite", False) or args.__setitem__(0, np.full_like(args[0], 1e30)),
        lambda: kwargs.__setitem__("margin", float(rng.choice([-1.0, np.nan, np.inf, 1e39]))),
        lambda: kwargs.__setitem__("loss_weight", float(rng.choice([np.nan, np.inf, -1.0, 0.0, 1e300]))),
        lambda: kwargs.__setitem__("backward", "yes"),
        lambda: kwargs.__setitem__("no_such_option", 1),
    ]
    if fn == "triplet_loss":
        ways += [lambda: kwargs.__setitem__("eps", float(rng.choice([0.0, -1e-6, np.inf, np.nan, 1e-50]))),
                 lambda: kwargs.__setitem__("mining", str(rng.choice(["HARDEST", "", "batch_all"]))),
                 lambda: args.__setitem__(2, np.full(n, 0.5)),                  # non-integer class ids
                 lambda: args.__setitem__(2, None)]
    elif fn == "mining_contrastive_loss":
        ways += [lambda: kwargs.__setitem__("mining_ratio", int(rng.choice([0, -1, 2 ** 31, 2 ** 63 - 1]))),
                 lambda: kwargs.__setitem__("mining_ratio", 2.5),
                 lambda: args.__setitem__(2, None)]
    else:
        ways += [lambda: kwargs.__setitem__("eps", float(rng.choice([0.0, -1e-6, np.inf, np.nan, 1e-50, 1e39]))),
                 lambda: kwargs.__setitem__("duplicate_threshold", float(rng.choice([-1.0, np.nan, np.inf, 1e39]))),
                 lambda: kwargs.__setitem__("batch_reduce", str(rng.choice(["MAX", "", "min", "RANDOM"]))),
                 lambda: kwargs.__setitem__("loss_type", "HINGE"),
                 lambda: kwargs.__setitem__("uniforms", rng.choice([np.ones(n), np.full(n, -0.5), np.zeros(n + 3),
                                                                    np.full(n, np.nan), rng.random(max(n - 1, 0))])),
                 lambda: args.__setitem__(0, args[0][:1]) or args.__setitem__(1, args[1][:1])]  # N = 1
    ways[int(rng.integers(len(ways)))]()


def run_case(seed, index):
    """Child process: run one case; print 'returned' or 'raised <type>'. A crash never gets to print."""
    import caffe_mining
    from caffe_mining import _core

    fn, args, kwargs, valid = draw_case(seed, index)
    entry = getattr(_core, fn)
    try:
        result = entry(*args, **kwargs)
        float(result[0])
        print(f"returned {'valid' if valid else 'invalid'} {caffe_mining._core.__file__}")
    except Exception as error:  # the bindings' checks: a Python exception is a pass
        print(f"raised {'valid' if valid else 'invalid'} {type(error).__name__}: {str(error)[:200]}")
    return 0


def fuzz(env, seed, cases, jobs, lib):
    """Run every case in its own process, jobs at a time; returns the failure descriptions."""
    failures, returned_valid, valid_cases = [], 0, 0
    pending = list(range(cases))
    running = []
    while pending or running:
        while pending and len(running) < jobs:
            index = pending.pop(0)
            process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--run-case", str(seed), str(index)],
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            running.append((index, process))
        index, process = running.pop(0)
        out, err = process.communicate(timeout=300)
        if process.returncode != 0 or has_report(err):
            failures.append(f"case {index} (seed {seed}): exit {process.returncode}\n{err[-4000:]}")
            continue
        if not out.startswith(("returned", "raised")):
            failures.append(f"case {index} (seed {seed}): unexpected output {out!r}")
            continue
        if " valid " in out:
            valid_cases += 1
            if out.startswith("returned"):
                returned_valid += 1
                if lib not in out:
                    failures.append(f"case {index}: imported {out.split()[-1]}, not the sanitized build in {lib}")
    if valid_cases and returned_valid < MIN_VALID_RETURNING * valid_cases:
        failures.append(f"only {returned_valid} of {valid_cases} valid cases returned a result: the fuzz no longer "
                        "calls the bindings as they are (signature change?)")
    print(f"sanitize: fuzz: {cases} cases, {valid_cases} valid ({returned_valid} returned), "
          f"{cases - valid_cases} invalid, {len(failures)} failure(s)")
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", default=os.path.join(REPO, "build", "sanitize"),
                        help="folder for the sanitized build (default: %(default)s)")
    parser.add_argument("--cases", type=int, default=120, help="fuzz cases (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="fuzz seed (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="fuzz processes at a time")
    parser.add_argument("--no-tests", action="store_true", help="fuzz only")
    parser.add_argument("--run-case", nargs=2, type=int, metavar=("SEED", "INDEX"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_case:
        return run_case(*args.run_case)

    start = time.monotonic()
    lib = build(os.path.abspath(args.build_dir))
    if lib is None:
        print("sanitize: the sanitized build failed", file=sys.stderr)
        return 2
    print(f"sanitize: built in {time.monotonic() - start:.0f} s into {lib}", flush=True)
    env = sanitized_env(lib)
    probe = subprocess.run([sys.executable, "-c", "import caffe_mining._core as m; print(m.__file__)"], cwd=REPO,
                           env=env, capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout.startswith(lib):
        print(f"sanitize: the sanitized module does not load first: {probe.stdout}{probe.stderr}", file=sys.stderr)
        return 2
    status = 0
    if not args.no_tests:
        tests_start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=REPO,
                                env=env, capture_output=True, text=True)
        print(result.stdout[-3000:] + result.stderr[-3000:], end="")
        if result.returncode != 0 or has_report(result.stderr):
            print(f"sanitize: the bindings' tests failed under the sanitizers (exit {result.returncode})")
            status = 1
        print(f"sanitize: tests in {time.monotonic() - tests_start:.0f} s", flush=True)
    fuzz_start = time.monotonic()
    failures = fuzz(env, args.seed, args.cases, args.jobs, lib)
    for failure in failures:
        print(f"sanitize: FAIL {failure}")
    print(f"sanitize: fuzz in {time.monotonic() - fuzz_start:.0f} s; total {time.monotonic() - start:.0f} s")
    return 1 if failures else status


if __name__ == "__main__":
    sys.exit(main())
