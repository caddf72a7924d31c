#!/usr/bin/env python3
"""Fetch Debian 11's caffe source package into a cache folder and unpack it with Debian's patches.

The mirror is read from this machine's apt sources (never written into the repo); apt runs with a
private configuration so the system's package lists stay untouched. Prints the unpacked tree's path.

    python3 scripts/fetch_caffe.py --cache ~/.cache/caffe-mining
"""
import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys

PACKAGE = "caffe"
VERSION = "1.0.0+git20180821.99bd997-8"
ORIG_TARBALL = "caffe_1.0.0+git20180821.99bd997.orig.tar.gz"
ORIG_SHA256 = "e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c"
SUITE = "bullseye"


def debian_mirror_uri():
    """The first Debian archive URI in the system's apt sources (deb822 or one-line format)."""
    candidates = sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    for path in candidates:
        for line in open(path, encoding="utf-8"):
            m = re.match(r"\s*URIs:\s*(\S+)", line)
            if m and "security" not in m.group(1):
                return m.group(1)
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        if os.path.exists(path):
            for line in open(path, encoding="utf-8"):
                m = re.match(r"\s*deb(?:-src)?\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", line)
                if m and "security" not in m.group(1):
                    return m.group(1)
    sys.exit("fetch_caffe: no Debian mirror found in /etc/apt/sources.list{,.d}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(download_dir):
    """apt-get source --download-only with its own source list, lists and cache under download_dir."""
    apt_dir = os.path.join(download_dir, "apt")
    for sub in ("lists/partial", "cache/archives/partial"):
        os.makedirs(os.path.join(apt_dir, sub), exist_ok=True)
    source_list = os.path.join(apt_dir, "sources.list")
    with open(source_list, "w", encoding="utf-8") as f:
        f.write(f"deb-src {debian_mirror_uri()} {SUITE} main\n")
    options = [
        "-o", f"Dir::Etc::SourceList={source_list}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={apt_dir}/lists",
        "-o", f"Dir::Cache={apt_dir}/cache",
        "-o", "APT::Sandbox::User=root",
    ]
    # apt's progress goes to stderr: stdout carries only the tree's path (CMake reads it).
    subprocess.run(["apt-get", "-q", *options, "update"], check=True, stdout=sys.stderr)
    subprocess.run(["apt-get", "-q", *options, "source", "--download-only", f"{PACKAGE}={VERSION}"],
                   cwd=download_dir, check=True, stdout=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, help="folder for the download and the unpacked tree")
    args = parser.parse_args()

    download_dir = os.path.join(os.path.abspath(args.cache), "download")
    tree = os.path.join(os.path.abspath(args.cache), "src", f"caffe-{VERSION}")
    if os.path.exists(os.path.join(tree, "CMakeLists.txt")):
        print(tree)
        return
    os.makedirs(download_dir, exist_ok=True)
    tarball = os.path.join(download_dir, ORIG_TARBALL)
    if not os.path.exists(tarball) or sha256(tarball) != ORIG_SHA256:
        download(download_dir)
    got = sha256(tarball)
    if got != ORIG_SHA256:
        sys.exit(f"fetch_caffe: {ORIG_TARBALL} has sha256 {got}, expected {ORIG_SHA256}")

    dsc = os.path.join(download_dir, f"{PACKAGE}_{VERSION.split(':')[-1]}.dsc")
    partial = tree + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(os.path.dirname(tree), exist_ok=True)
    # Signatures are not checked by dpkg-source here; the orig tarball's sha256 above is the check.
    subprocess.run(["dpkg-source", "--no-check", "-x", dsc, partial], check=True,
                   stdout=sys.stderr)
    os.rename(partial, tree)
    print(tree)


if __name__ == "__main__":
    main()
