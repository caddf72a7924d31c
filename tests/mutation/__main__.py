"""Command line of the mutation suite: runs the mutants, prints one line each, the score and the survivors; exits 0
when every non-equivalent mutant is killed, 1 when one survives, 2 on an error (a stale anchor, a mutant that does
not compile, failing unmutated tests, an "equivalent" mutant that a test kills)."""
import argparse
import json
import sys
from pathlib import Path

from .mutants import MUTANTS
from .runner import run, stale_anchors


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutation", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m tests.mutation --subset ci\n"
               "         python -m tests.mutation --only duplicate_test_inclusive swap_at_equal_value --keep")
    parser.add_argument("--subset", choices=["all", "ci"], default="all", help="every mutant, or the CI subset")
    parser.add_argument("--only", nargs="+", metavar="ID", help="these mutants only")
    parser.add_argument("--list", action="store_true", help="print the mutants and their rules, run nothing")
    parser.add_argument("--check-anchors", action="store_true",
                        help="only check that every anchor occurs exactly once (seconds; no build)")
    parser.add_argument("--workdir", type=Path, help="where the scratch copy goes (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run (a hang is a kill)")
    parser.add_argument("--json", type=Path, help="also write the outcomes to this file")
    return parser.parse_args(argv)


def select(args):
    mutants = [m for m in MUTANTS if args.subset == "all" or m.ci]
    if args.only:
        unknown = set(args.only) - {m.id for m in MUTANTS}
        if unknown:
            sys.exit(f"mutation: no mutant {sorted(unknown)}")
        mutants = [m for m in MUTANTS if m.id in args.only]
    return mutants


def main(argv=None):
    args = parse_args(argv)
    mutants = select(args)
    if args.list:
        for m in mutants:
            flags = ("ci " if m.ci else "   ") + ("equivalent" if m.equivalent else "")
            print(f"{m.id:38s} {flags:14s} {m.file.split('/')[-1]:24s} {m.rule}")
        print(f"{len(mutants)} mutants")
        return 0
    if args.check_anchors:
        stale = stale_anchors(mutants)
        for message in stale:
            print(f"ERROR stale anchor: {message}")
        print(f"mutation: {len(mutants) - len(stale)} of {len(mutants)} anchors match exactly once")
        return 2 if stale else 0
    outcomes, errors, wall_s = run(mutants, workdir=args.workdir, keep=args.keep, timeout_s=args.timeout,
                                   log=lambda line: print(line, flush=True))
    judged = [o for o in outcomes if o.status != "ERROR"]
    killed = [o for o in judged if o.status == "killed"]
    equivalent = [o for o in judged if o.status == "equivalent"]
    survived = [o for o in judged if o.status == "SURVIVED"]
    failed = [o for o in outcomes if o.status == "ERROR"]
    scored = len(killed) + len(survived)
    score = 100.0 * len(killed) / scored if scored else 0.0
    print(f"\nmutation: {len(mutants)} mutants ({'CI subset' if args.subset == 'ci' else 'all'}), "
          f"{len(killed)} killed, {len(survived)} survived, {len(equivalent)} equivalent, {len(failed)} errors; "
          f"score {score:.1f}% of the non-equivalent ones; wall {wall_s:.0f} s, "
          f"mutants' CPU {sum(o.cpu_s for o in outcomes):.0f} s")
    for o in equivalent:
        print(f"  equivalent {o.mutant.id}: {o.detail}")
    for o in survived:
        print(f"  SURVIVED   {o.mutant.id} ({o.mutant.file}): breaks \"{o.mutant.rule}\" and no test notices")
    for message in errors + [f"{o.mutant.id}: {o.detail}" for o in failed]:
        print(f"  ERROR      {message}")
    if args.json:
        args.json.write_text(json.dumps({
            "wall_s": wall_s, "score": score, "errors": errors,
            "outcomes": [dict(id=o.mutant.id, status=o.status, detail=o.detail, build_s=o.build_s, test_s=o.test_s,
                              cpu_s=o.cpu_s)
                         for o in outcomes]}, indent=1))
    if errors or failed or len(outcomes) < len(mutants):
        return 2
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
