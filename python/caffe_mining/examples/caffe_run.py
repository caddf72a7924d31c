"""Finding our Caffe (the ``caffe`` binary and pycaffe), rendering prototxt files, running ``caffe train``.

Where things are looked for, first found wins:

- the ``caffe`` binary: an explicit path, ``$CAFFE_MINING_CAFFE_BIN``, ``<build>/caffe-build/tools/caffe``,
  then ``caffe`` on PATH;
- pycaffe: ``import caffe`` as PYTHONPATH has it, else ``<build>/caffe-src/python``;

where ``<build>`` is ``$CAFFE_MINING_BUILD_DIR``, else ``$XDG_CACHE_HOME/caffe-mining/build-cpu`` (what
``scripts/build.sh`` builds). Either must be a Caffe that has our layers.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from caffe_mining.losses import LOSSES

__all__ = ["CaffeNotFound", "cache_dir", "data_dir", "default_build_dir", "find_caffe_binary", "import_pycaffe",
           "read_prototxt", "run_caffe_train", "snapshot_weights", "write_prototxt"]

#: Every C++ layer this project adds (the losses' registry): a pycaffe without one of them is not ours.
OUR_LAYERS = tuple(LOSSES)


class CaffeNotFound(RuntimeError):
    """No usable Caffe with our layers (binary or pycaffe); the message says where it looked."""


def cache_dir() -> Path:
    """Where builds, data and runs live outside the clone: $CAFFE_MINING_CACHE, else
    ${XDG_CACHE_HOME:-~/.cache}/caffe-mining (as scripts/env.sh has it)."""
    if os.environ.get("CAFFE_MINING_CACHE"):
        return Path(os.environ["CAFFE_MINING_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "caffe-mining"


def data_dir(example: str) -> Path:
    """The default data folder of an example: $CAFFE_MINING_DATA/<example>, else <cache>/data/<example>."""
    root = os.environ.get("CAFFE_MINING_DATA")
    return (Path(root).expanduser() if root else cache_dir() / "data") / example


def default_build_dir() -> Path:
    if os.environ.get("CAFFE_MINING_BUILD_DIR"):
        return Path(os.environ["CAFFE_MINING_BUILD_DIR"]).expanduser()
    return cache_dir() / "build-cpu"


def find_caffe_binary(explicit: str | os.PathLike | None = None) -> Path:
    candidates = [("--caffe", explicit), ("$CAFFE_MINING_CAFFE_BIN", os.environ.get("CAFFE_MINING_CAFFE_BIN")),
                  ("the build folder", default_build_dir() / "caffe-build" / "tools" / "caffe"),
                  ("PATH", shutil.which("caffe"))]
    for origin, candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate).resolve()
        if candidate and origin.startswith(("--", "$")):  # asked for explicitly: a wrong path is an error
            raise CaffeNotFound(f"{origin} = {candidate} is not an executable file")
    raise CaffeNotFound("no caffe binary: pass --caffe, set CAFFE_MINING_CAFFE_BIN, or build with "
                        f"scripts/build.sh (looked in {default_build_dir()}/caffe-build/tools and on PATH)")


def import_pycaffe():
    """``import caffe`` (our build's pycaffe, falling back to the default build folder), checked to have our
    layers registered; quiet glog unless GLOG_minloglevel is set."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import caffe
    except ImportError:
        fallback = default_build_dir() / "caffe-src" / "python"
        if not (fallback / "caffe" / "__init__.py").is_file():
            raise CaffeNotFound("pycaffe is not importable: put <build>/caffe-src/python on PYTHONPATH "
                                f"(nothing at {fallback})") from None
        sys.path.insert(0, str(fallback))
        try:
            import caffe
        except ImportError as error:
            raise CaffeNotFound(f"pycaffe at {fallback} does not import: {error}") from error
    missing = [name for name in OUR_LAYERS if name not in caffe.layer_type_list()]
    if missing:
        raise CaffeNotFound(f"pycaffe at {Path(caffe.__file__).parent} lacks the layers {missing}: it is not a "
                            "Caffe built with caffe-mining's layers")
    caffe.set_mode_cpu()
    return caffe


def read_prototxt(path: str | os.PathLike, message: str = "NetParameter"):
    """A caffe_pb2 message (``NetParameter``, ``SolverParameter``) parsed from a prototxt file."""
    from google.protobuf import text_format

    caffe = import_pycaffe()
    parsed = getattr(caffe.proto.caffe_pb2, message)()
    text_format.Merge(Path(path).read_text(), parsed)
    return parsed


def write_prototxt(parsed, path: str | os.PathLike, header: str = "") -> Path:
    from google.protobuf import text_format

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + text_format.MessageToString(parsed))
    return path


_PROGRESS = re.compile(r"\] (Iteration \d+ \(.*loss = .*|Iteration \d+, loss = .*|\s+Test net output #.*)")


def run_caffe_train(caffe_bin: str | os.PathLike, solver: str | os.PathLike, log_path: str | os.PathLike,
                    prefix: str = "", cwd: str | os.PathLike | None = None, echo=print) -> float:
    """Runs ``caffe train --solver=...``, all output to ``log_path``, the progress lines echoed with
    ``prefix``; returns the wall time in seconds. Raises RuntimeError with the log's tail when it fails."""
    env = dict(os.environ)
    env["GLOG_logtostderr"] = "1"   # only the console (our log file), no glog files in /tmp
    env["GLOG_minloglevel"] = "0"   # the INFO lines are the progress and the curves (pycaffe's quiet setting
                                    # would otherwise be inherited)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    command = [str(caffe_bin), "train", f"--solver={solver}"]
    echo(f"{prefix}$ {' '.join(command)}")
    log_path = Path(log_path)
    start = time.monotonic()
    tail: list[str] = []
    with open(log_path, "w") as log, subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT, text=True,
                                                      errors="replace") as process:
        for line in process.stdout:
            log.write(line)
            tail = (tail + [line.rstrip()])[-25:]
            if match := _PROGRESS.search(line):
                echo(f"{prefix}{match.group(1).strip()}")
    seconds = time.monotonic() - start
    if process.returncode != 0:
        raise RuntimeError(f"caffe train failed (exit {process.returncode}); full log {log_path}; its end:\n"
                           + "\n".join(tail))
    return seconds


def snapshot_weights(prefix: str | os.PathLike) -> list[tuple[int, Path]]:
    """(iteration, path) of every ``<prefix>_iter_<n>.caffemodel``, by iteration."""
    prefix = Path(prefix)
    found = []
    for path in prefix.parent.glob(f"{prefix.name}_iter_*.caffemodel"):
        number = path.name[len(prefix.name) + len("_iter_"):-len(".caffemodel")]
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)
