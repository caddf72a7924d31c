"""python -m benchmarks: speed and memory of the loss layers, against the floor and the alternatives.

Examples (from the repository root, with the project's venv and pycaffe on PYTHONPATH):
  python -m benchmarks run                      # full sizes; table on stdout, results/ gets .md, .json, .png
  python -m benchmarks run --smoke              # smallest size of each suite only (what CI's smoke test runs)
  python -m benchmarks run --suite hardnet-configs --update-readme
                                                # every HardNet mining configuration against one SGEMM (N = 512,
                                                # 1024, 2048; a few minutes); rewrites only its README section
The OpenBLAS kernel: where OpenBLAS fell back to a generic kernel on a CPU it does not know, `run` sets
OPENBLAS_CORETYPE to the tuned one first (scripts/openblas_kernel.py), unless it is set already; the results
name the kernel the SGEMM and the core ran with and where OPENBLAS_CORETYPE came from.
  python -m benchmarks run --suite triplet --update-readme
                                                # TripletLoss, every mining x {hinge, soft margin} (N = 128, 512,
                                                # 1024); rewrites only its README section
  python -m benchmarks run --update-readme      # also rewrites the results section of benchmarks/README.md
  python -m benchmarks run --device gpu         # the GPU suite (benchmarks/gpu.py): needs a GPU, CuPy and the
                                                # CUDA bindings; refuses with status 2 and says why without them
  python -m benchmarks setup-torch              # installs torch into its own folder for the PyTorch comparison
  python -m benchmarks setup-torch --refresh-constraints   # the same at the newest torch, re-pinned
  python -m benchmarks revisions --before 8f48fae   # another revision's core against this tree's (same bits
                                                # checked, after / before per configuration)
  python -m benchmarks build-times              # Caffe build from scratch (ccache off) and a one-file rebuild
"""
from __future__ import annotations

import argparse
import os
import sys

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _threads_from_argv(argv) -> int:
    for index, arg in enumerate(argv):
        if arg == "--threads" and index + 1 < len(argv):
            return int(argv[index + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return 1


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="time both suites, measure memory, write table, JSON and plot")
    run.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                     help="cpu: the CPU suites (default); gpu: the GPU suite (benchmarks/gpu.py)")
    run.add_argument("--smoke", action="store_true", help="smallest size of each suite, 3 rounds")
    run.add_argument("--suite", choices=("hardnet", "hardnet-configs", "contrastive", "triplet", "margin", "all"),
                     default="all",
                     help="hardnet: HardNetLoss (MIN) against SGEMM, PyTorch, NumPy; hardnet-configs: every mining "
                          "configuration (MIN, RANDOM, AVERAGE, each with and without anchor swap) through the core "
                          "and the layer against SGEMM; contrastive: MiningContrastiveLoss; triplet: TripletLoss, "
                          "every mining x {hinge, soft margin} against SGEMM and pytorch-metric-learning; "
                          "all (default): those four; margin (not in all): MarginLoss against SGEMM and "
                          "pytorch-metric-learning")
    run.add_argument("--hardnet-sizes", type=int, nargs="+", default=[128, 512, 1024, 4096])
    run.add_argument("--config-sizes", type=int, nargs="+", default=[512, 1024, 2048],
                     help="N of the hardnet-configs suite")
    run.add_argument("--triplet-sizes", type=int, nargs="+", default=[128, 512, 1024], help="N of the triplet suite")
    run.add_argument("--margin-sizes", type=int, nargs="+", default=[128, 512, 1024], help="N of the margin suite")
    run.add_argument("--contrastive-sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    run.add_argument("--gpu-hardnet-sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    run.add_argument("--gpu-contrastive-sizes", type=int, nargs="+", default=[65536, 1 << 20])
    run.add_argument("--ratios", type=int, nargs="+", default=[1, 2, 4], help="mining ratios")
    run.add_argument("--dim", type=int, default=128)
    run.add_argument("--rounds", type=int, default=11, help="timed rounds (each: one sample per implementation)")
    run.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    run.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
    run.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                     help="cpu: this process's CPU time, robust to other processes' load (default); wall: elapsed")
    run.add_argument("--min-sample", type=float, default=0.05, help="seconds a timed sample lasts at least")
    run.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    run.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    run.add_argument("--out", default="benchmarks/results", help="folder for results.md/.json/.png")
    run.add_argument("--update-readme", action="store_true", help="rewrite benchmarks/README.md's results section")

    torch = commands.add_parser("setup-torch", help="pip install torch into a folder of its own (not a project "
                                "dependency), at the versions of benchmarks/torch-constraints.txt")
    torch.add_argument("--refresh-constraints", action="store_true",
                       help="first re-pin torch-constraints.txt to the newest torch (a pip dry run)")

    revisions = commands.add_parser("revisions", help="another revision's core against this tree's, interleaved "
                                    "(benchmarks/revisions.py): every configuration, same bits checked")
    revisions.add_argument("--before", required=True, help="a git revision (e.g. 8f48fae, the core before the kit)")
    revisions.add_argument("--hardnet-sizes", type=int, nargs="+", default=[512, 1024])
    revisions.add_argument("--contrastive-sizes", type=int, nargs="+", default=[4096, 65536])
    revisions.add_argument("--triplet-sizes", type=int, nargs="*", default=[512, 1024],
                           help="TripletLoss sizes, where the other revision has it (none: skip)")
    revisions.add_argument("--dim", type=int, default=128)
    revisions.add_argument("--rounds", type=int, default=7)
    revisions.add_argument("--warmup", type=int, default=1)
    revisions.add_argument("--min-sample", type=float, default=0.05)

    build = commands.add_parser("build-times", help="time a Caffe build from scratch and a one-file rebuild")
    build.add_argument("--work", default=None, help="scratch folder (default: a new one under /tmp)")
    args = parser.parse_args(argv)
    if args.command == "run" and args.smoke:
        args.hardnet_sizes = args.hardnet_sizes[:1] if "--hardnet-sizes" in argv else [128]
        args.config_sizes = args.config_sizes[:1] if "--config-sizes" in argv else [128]
        args.triplet_sizes = args.triplet_sizes[:1]
        args.contrastive_sizes = args.contrastive_sizes[:1] if "--contrastive-sizes" in argv else [1024]
        args.margin_sizes = args.margin_sizes[:1]
        args.gpu_hardnet_sizes, args.gpu_contrastive_sizes = args.gpu_hardnet_sizes[:1], args.gpu_contrastive_sizes[:1]
        args.rounds, args.warmup = min(args.rounds, 3), min(args.warmup, 1)
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Before NumPy (and with it OpenBLAS) loads: OpenBLAS reads its thread count once, at load time.
    for name in THREAD_VARIABLES:
        os.environ[name] = str(_threads_from_argv(argv))
    args = parse_args(argv)
    if args.command in ("run", "revisions") and getattr(args, "device", "cpu") == "cpu":
        from benchmarks.machine import use_tuned_openblas_kernel

        # Also before OpenBLAS loads: its kernel is chosen once, at load time, like its thread count.
        args.openblas_coretype = use_tuned_openblas_kernel()
    if args.command == "run" and args.device == "gpu":
        from benchmarks.gpu import run

        return run(args)
    if args.command == "run":
        from benchmarks.run import run

        return run(args)
    if args.command == "setup-torch":
        from benchmarks.setup_torch import install

        return install(refresh=args.refresh_constraints)
    if args.command == "revisions":
        from benchmarks.revisions import main as revisions

        return revisions(args)
    from benchmarks.build_times import main as build_times

    return build_times(args)


if __name__ == "__main__":
    sys.exit(main())
