#!/usr/bin/env python3
"""The pinned Python packages of the virtual environment (scripts/python-constraints.txt), for install-deps.sh.

    python_deps.py stale CONSTRAINTS NAME...   # prints what pip must install: NAMEs missing or not at their pin,
                                               # and any other pinned package installed at another version
    python_deps.py freeze CONSTRAINTS          # writes this environment's versions (pip freeze) as the pins

Uses only the standard library, so it runs in a fresh virtual environment.
"""
import argparse
import re
import subprocess
import sys
from importlib import metadata

HEADER = """\
# The versions of the Python packages that scripts/install-deps.sh installs (pip install -c), as CI tested them.
# Written by `bash scripts/install-deps.sh --refresh-constraints` (newest versions, then pip freeze); commit it
# once the tests pass with it.
"""
OURS = {"caffe-mining"}  # the project itself, installed by build.sh (editable)


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path):
    """{canonical name: version} of a constraints file of `name==version` lines."""
    pins = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;=]+)", line)
            if not match:
                sys.exit(f"python_deps: {path}:{number}: expected name==version. Got: {line!r}")
            pins[canonical(match[1])] = match[2]
    return pins


def installed_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def stale(pins, names):
    """Names pip must install so that every named package, and every pinned one present, is at its pin."""
    wanted = []
    for name in names:
        if canonical(name) not in pins:
            sys.exit(f"python_deps: {name} has no pin in the constraints file; add it with --refresh-constraints")
        if installed_version(name) != pins[canonical(name)]:
            wanted.append(name)
    named = {canonical(n) for n in names}
    for name, version in sorted(pins.items()):
        present = installed_version(name)
        if name not in named and present is not None and present != version:
            wanted.append(name)
    return wanted


def freeze(path):
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout.splitlines()
    pins = sorted((line for line in frozen if "==" in line and canonical(line.split("==")[0]) not in OURS),
                  key=lambda line: canonical(line.split("==")[0]))
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEADER + "\n".join(pins) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("stale")
    check.add_argument("constraints")
    check.add_argument("names", nargs="*")
    write = commands.add_parser("freeze")
    write.add_argument("constraints")
    args = parser.parse_args(argv)
    if args.command == "stale":
        print("\n".join(stale(read_pins(args.constraints), args.names)))
    else:
        freeze(args.constraints)
    return 0


if __name__ == "__main__":
    sys.exit(main())
