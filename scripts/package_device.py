#!/usr/bin/env python3
"""Packs what scripts/device_check.sh needs on the GPU machine into device_payload/ (ignored by git), or checks it.

The GPU machine has CUDA 13, Python 3.12, CuPy, PyTorch, pybind11 and compute-sanitizer, but none of Caffe's
libraries and no package registry, and a run may carry 64 MiB (working tree included). The payload holds:

  caffe.tar.xz        the CUDA build's `caffe` tool, gtest binary (test.testbin) and libcaffe, stripped
                      (bin/, lib/), the minimal models' data made here (data/<model>/pairs.h5) and OpenBLAS's
                      headers (include/openblas/, for building caffe_mining._core there)
  debs/*.deb          the Debian packages of every library those binaries load beyond glibc, libstdc++ and CUDA
                      (found with ldd and dpkg -S, fetched with apt-get download); unpacked there with dpkg -x
                      into a prefix
  manifest.json       each file's size and sha256, the build it came from and its GPU architectures, and the
                      measured sizes (unstripped, stripped, compressed)

  python3 scripts/package_device.py [--build DIR]     # pack (reuses downloaded .deb files)
  python3 scripts/package_device.py --check           # verify the payload, that the bindings' sources travel
                                                      # with the tree, and the 64 MiB limit; exit 1 if not

The build is --build, else $CAFFE_MINING_DEVICE_BUILD, else the first of <cache>/build-cuda90 (sm_90 only, the
smallest) and <cache>/build-cuda that holds a built caffe.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = REPO / "device_payload"
LIMIT_MIB = 64  # what one call of the device tool may carry, working tree included
MARGIN_MIB = 2  # left for files added to the tree after packing
# Loaded from the machine itself: glibc, the compiler's runtime and CUDA's libraries (the machine's toolkit).
SYSTEM_LIBRARY = re.compile(r"^(linux-vdso|ld-linux|libc\.|libm\.|libpthread\.|libdl\.|librt\.|libresolv\.|"
                            r"libstdc\+\+\.|libgcc_s\.|libcuda|libcudart|libcublas|libcurand|libnvidia|libnccl)")
# Building caffe_mining._core there needs OpenBLAS's headers (cblas.h...), taken from this package (its 5 MB
# static library stays here), and its library, which the ldd closure brings.
HEADER_PACKAGE = "libopenblas-pthread-dev"
BINARIES = {"bin/caffe": "tools/caffe", "bin/test.testbin": "test/test.testbin"}
MODELS = {"siamese_minimal": "make_pairs.py", "hardnet_minimal": "make_data.py"}
# The bindings' sources, which the tree carries (setup.py globs them there): no list of losses to keep here.
BINDING_SOURCES = ("python/caffe_mining/*.cpp", "python/caffe_mining/*.hpp", "python/caffe_mining/*.cu",
                   "python/caffe_mining/*.head.pyi", "python/caffe_mining/bindings/*")


def log(message: str) -> None:
    print(f"package_device: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    base = os.environ.get("CAFFE_MINING_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "caffe-mining")
    return Path(base)


def find_build(given: str | None) -> Path:
    candidates = [given, os.environ.get("CAFFE_MINING_DEVICE_BUILD"), cache_dir() / "build-cuda90",
                  cache_dir() / "build-cuda"]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "caffe-build" / "tools" / "caffe").exists():
            return Path(candidate)
        if candidate in (given, os.environ.get("CAFFE_MINING_DEVICE_BUILD")):
            raise SystemExit(f"package_device: no built caffe under {candidate}/caffe-build")
    raise SystemExit("package_device: no CUDA build of Caffe found (scripts/build.sh --cuda, or --build DIR)")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gpu_architectures(path: Path, build: Path) -> list:
    """The sm_XX of the device code in a binary: read by cuobjdump --list-elf where it exists, else the build's
    configured CUDA_ARCH_BIN (this machine's toolkit may lack cuobjdump)."""
    cuobjdump = shutil.which("cuobjdump") or "/usr/local/cuda/bin/cuobjdump"
    if os.access(cuobjdump, os.X_OK):
        listing = subprocess.run([cuobjdump, "--list-elf", str(path)], capture_output=True, text=True).stdout
        return sorted(set(re.findall(r"\.(sm_\d+a?)\.", listing)))
    cache = (build / "caffe-build" / "CMakeCache.txt").read_text()
    configured = re.search(r"^CUDA_ARCH_BIN:\w+=(.*)$", cache, re.M)
    return [f"sm_{arch}" for arch in configured.group(1).split()] if configured else []


CUDA_LIBRARY = re.compile(r"^(libcuda\.|libcudart|libcublas|libcurand|libcufft|libcusolver|libcusparse|libnccl|libnvidia|libnvrtc|libnvJitLink)")


def shared_libraries(binaries) -> tuple:
    """(soname -> resolved path of every library the binaries load (ldd), the system's own left out; the sorted
    sonames of the CUDA libraries they expect the GPU machine to have)."""
    found, from_cuda = {}, set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
        for name, path in re.findall(r"^\s*(\S+) => (\S+)", out, re.M):
            if CUDA_LIBRARY.match(name):
                from_cuda.add(name)
            elif not SYSTEM_LIBRARY.match(name) and not name.startswith("libcaffe"):
                found[name] = path
    return found, sorted(from_cuda)


def owning_package(path: str) -> str:
    """The Debian package that installed a library (usrmerge: /lib and /usr/lib are tried)."""
    real = os.path.realpath(path)
    tries = {path, real}
    for p in list(tries):
        if p.startswith("/lib/"):
            tries.add("/usr" + p)
        elif p.startswith("/usr/lib/"):
            tries.add(p[len("/usr"):])
    for candidate in sorted(tries):
        done = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.split(":")[0].strip()
    raise SystemExit(f"package_device: no Debian package owns {path}")


def download_debs(packages, into: Path) -> list:
    """apt-get download of each package (cached in <cache>/download/device-debs), copied into `into`."""
    store = cache_dir() / "download" / "device-debs"
    store.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(store.glob(f"{p}_*.deb"))]
    if missing:
        log(f"apt-get download {' '.join(missing)}")
        subprocess.run(["apt-get", "download", *missing], cwd=store, check=True, stdout=subprocess.DEVNULL)
    into.mkdir(parents=True, exist_ok=True)
    debs = []
    for package in packages:
        deb = sorted(store.glob(f"{package}_*.deb"))[-1]
        shutil.copy2(deb, into / deb.name)
        debs.append(deb.name)
    return debs


def openblas_headers(into: Path, scratch: Path) -> None:
    """cblas.h and the headers it includes, from HEADER_PACKAGE's .deb."""
    deb = scratch / "debs"
    download_debs([HEADER_PACKAGE], deb)
    unpacked = scratch / "unpacked"
    subprocess.run(["dpkg", "-x", str(next(deb.glob("*.deb"))), str(unpacked)], check=True)
    include = next(unpacked.glob("usr/include/*/openblas-pthread"))
    shutil.copytree(include, into)


def make_data(into: Path) -> None:
    """The minimal models' HDF5 data (the scripts also rewrite models/*/pairs_h5_list.txt here: ignored files)."""
    python = os.environ.get("CAFFE_MINING_PYTHON") or str(cache_dir() / "venv" / "bin" / "python")
    for model, script in MODELS.items():
        subprocess.run([python, str(REPO / "models" / model / script), "--data-dir", str(into / model)],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, PYTHONPATH=str(REPO / "python")))


def fingerprint(sources: dict) -> dict:
    """What the payload is made from: each binary's size and modification time, and the data scripts' hashes."""
    made_of = {name: [path.stat().st_size, int(path.stat().st_mtime)] for name, path in sources.items()}
    for model, script in MODELS.items():
        made_of[script] = sha256(REPO / "models" / model / script)
    made_of["package_device.py"] = sha256(Path(__file__))
    return made_of


def pack(build: Path) -> dict:
    caffe_build = build / "caffe-build"
    library = Path(os.path.realpath(caffe_build / "lib" / "libcaffe.so"))
    sources = {name: caffe_build / rel for name, rel in BINARIES.items()}
    sources[f"lib/{library.name}"] = library
    made_of = fingerprint(sources)
    manifest_path = PAYLOAD / "manifest.json"
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("made_of") == made_of and old.get("build") == str(build) and not check_files(old):
            log("up to date")
            return old
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "caffe"
        for name, source in sources.items():
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            subprocess.run(["strip", "--strip-unneeded", str(target)], check=True)
            sizes[name] = {"unstripped": source.stat().st_size, "stripped": target.stat().st_size}
        soname = re.search(r"SONAME\s+(\S+)", subprocess.run(["objdump", "-p", str(library)], capture_output=True,
                                                             text=True).stdout)
        if soname and soname.group(1) != library.name:
            (stage / "lib" / soname.group(1)).symlink_to(library.name)
        make_data(stage / "data")
        openblas_headers(stage / "include" / "openblas", Path(tmp))
        if PAYLOAD.exists():
            shutil.rmtree(PAYLOAD)
        PAYLOAD.mkdir()
        started = time.time()
        with tarfile.open(PAYLOAD / "caffe.tar.xz", "w:xz", preset=6) as tar:
            tar.add(stage, arcname="caffe")
        log(f"compressed the binaries in {time.time() - started:.0f} s")
    libraries, from_cuda = shared_libraries(sources.values())
    packages = sorted({owning_package(path) for path in libraries.values()})
    debs = download_debs(packages, PAYLOAD / "debs")
    manifest = {
        "created": time.strftime("%Y-%m-%d %H:%M %Z"),
        "build": str(build),
        "made_of": made_of,
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "gpu_architectures": gpu_architectures(library, build),
        "binary_sizes": sizes,
        "libraries": libraries,
        "cuda_libraries_expected_there": from_cuda,
        "packages": packages,
        "debs": debs,
        "files": {},
    }
    for path in sorted(PAYLOAD.rglob("*")):
        if path.is_file():
            manifest["files"][str(path.relative_to(PAYLOAD))] = {"bytes": path.stat().st_size, "sha256": sha256(path)}
    (PAYLOAD / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def travelling_files() -> list:
    """What the device tool sends besides carried paths: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    return [os.fsdecode(p) for p in listed if p and (REPO / os.fsdecode(p)).is_file()]


def tree_bytes() -> int:
    return sum((REPO / name).stat().st_size for name in travelling_files())


def binding_sources_left_behind() -> list:
    """Sources of the bindings (what device_check.sh's setup.py build compiles: every loss's own files in
    bindings/, the modules' shared files and stub heads) that would not travel with the tree (git-ignored)."""
    travelling = set(travelling_files())
    sources = [p for pattern in BINDING_SOURCES for p in sorted(REPO.glob(pattern)) if p.is_file()]
    return [str(p.relative_to(REPO)) for p in sources if str(p.relative_to(REPO)) not in travelling]


def check_files(manifest: dict) -> list:
    problems = []
    for name, entry in manifest["files"].items():
        path = PAYLOAD / name
        if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
            problems.append(f"{name} missing or changed since packing")
    return problems


def check() -> list:
    """Problems with the payload (empty when it is complete, unchanged since packing and within the limit)."""
    problems = []
    manifest_path = PAYLOAD / "manifest.json"
    if not manifest_path.exists():
        return [f"{manifest_path} missing: run python3 scripts/package_device.py"]
    manifest = json.loads(manifest_path.read_text())
    problems += check_files(manifest)
    if not problems:
        with tarfile.open(PAYLOAD / "caffe.tar.xz") as tar:
            names = set(tar.getnames())
        wanted = [f"caffe/{name}" for name in BINARIES] + [f"caffe/data/{m}/pairs.h5" for m in MODELS] + \
            ["caffe/include/openblas/cblas.h"]
        problems += [f"caffe.tar.xz lacks {name}" for name in wanted if name not in names]
        if not any(n.startswith("caffe/lib/libcaffe.so") for n in names):
            problems.append("caffe.tar.xz lacks lib/libcaffe.so*")
    for package in manifest["packages"]:
        if not any(deb.startswith(f"{package}_") for deb in manifest["debs"]):
            problems.append(f"no .deb for {package}")
    if any(name.startswith("libnccl") for name in manifest.get("cuda_libraries_expected_there", [])):
        # Its image lists the nvidia-nccl wheel, whose folder device_check.sh puts on the library path.
        print("note: libcaffe links NCCL: the GPU machine must provide it (-DWITH_NCCL=OFF builds without)")
    if "sm_90" not in manifest["gpu_architectures"]:
        problems.append(f"libcaffe has no sm_90 code: {manifest['gpu_architectures']}")
    if not re.search(r"^\s*/device_payload/?\s*$", (REPO / ".gitignore").read_text(), re.M):
        problems.append(".gitignore must list /device_payload/ (it travels as a carried path)")
    if not list(REPO.glob("python/caffe_mining/bindings/*.cpp")):
        problems.append("no binding files in python/caffe_mining/bindings/")
    problems += [f"{name} is git-ignored: it would not travel, and setup.py builds the bindings from it there"
                 for name in binding_sources_left_behind()]
    payload = sum(e["bytes"] for e in manifest["files"].values()) + manifest_path.stat().st_size
    tree = tree_bytes()
    total = payload + tree
    print(f"device payload {payload / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = "
          f"{total / 2**20:.1f} MiB of {LIMIT_MIB} MiB (margin {MARGIN_MIB} MiB)")
    if total > (LIMIT_MIB - MARGIN_MIB) * 2**20:
        problems.append(f"{total / 2**20:.1f} MiB would travel: over {LIMIT_MIB - MARGIN_MIB} MiB")
    return problems


def describe(manifest: dict) -> None:
    for name, size in manifest["binary_sizes"].items():
        print(f"{name:24s} {size['unstripped'] / 2**20:8.1f} MiB unstripped {size['stripped'] / 2**20:8.1f} MiB "
              f"stripped")
    for name, entry in manifest["files"].items():
        if not name.startswith("debs/"):
            print(f"{name:24s} {entry['bytes'] / 2**20:8.1f} MiB")
    debs = sum(e["bytes"] for n, e in manifest["files"].items() if n.startswith("debs/"))
    print(f"{'debs/ (' + str(len(manifest['debs'])) + ' packages)':24s} {debs / 2**20:8.1f} MiB")
    print(f"GPU architectures of libcaffe: {' '.join(manifest['gpu_architectures']) or 'unknown'}")
    print(f"CUDA libraries the GPU machine must have: {' '.join(manifest.get('cuda_libraries_expected_there', []))}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", help="superbuild folder of a CUDA build (holding caffe-build/)")
    parser.add_argument("--check", action="store_true", help="verify the payload and the size limit only")
    args = parser.parse_args(argv)
    if not args.check:
        manifest = pack(find_build(args.build))
        describe(manifest)
    problems = check()
    for problem in problems:
        print(f"package_device: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
