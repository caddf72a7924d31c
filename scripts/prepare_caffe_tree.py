#!/usr/bin/env python3
"""Lay out the Caffe tree we build: a pristine Caffe source, plus our compatibility patches, our layer
overlay (caffe_layers/) and our caffe.proto additions, mirrored into a separate folder.

The source tree is never modified. Only files whose content changes are written, so an unchanged rerun
touches nothing and make rebuilds only what an edit really affects. When the set of overlay files changes,
Caffe's top CMakeLists.txt is touched so its source globs run again.

    python3 scripts/prepare_caffe_tree.py --source SRC --dest DEST
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERLAY = os.path.join(REPO, "caffe_layers")
PATCHES = os.path.join(REPO, "patches")
PROTO_PATCHER = os.path.join(REPO, "proto", "patch_caffe_proto.py")
PROTO_PATH = os.path.join("src", "caffe", "proto", "caffe.proto")
MANIFEST = ".caffe-mining-overlay"  # overlay paths written by the last run, to remove stale ones
SKIP_DIRS = {".git", "debian", ".pc"}


def relative_files(root, skip_dirs=()):
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
        for name in sorted(files):
            yield os.path.relpath(os.path.join(folder, name), root)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write_if_changed(path, content, mode=None):
    """Write content to path unless it already holds exactly that; True when written."""
    if os.path.isfile(path) and not os.path.islink(path) and read(path) == content:
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path):
        os.unlink(path)
    with open(path, "wb") as f:
        f.write(content)
    if mode is not None:
        os.chmod(path, mode)
    return True


def apply_compat_patch(tree, patch):
    """Apply one compatibility patch; a tree that already has the fix (a fork, a newer Caffe) is fine as it is."""
    def run_patch(*flags):
        # A hunk that applies at an offset or with fuzz would leave FILE.orig, which the mirror would pick up.
        return subprocess.run(["patch", "-p1", "--batch", "-s", "--no-backup-if-mismatch", *flags, "-i", patch],
                              cwd=tree, capture_output=True, text=True)
    if run_patch("--dry-run").returncode == 0:
        run_patch()
    elif run_patch("--dry-run", "--reverse").returncode != 0:
        with open(patch, encoding="utf-8") as f:
            reason = f.readline().strip()
        print(f"prepare_caffe_tree: warning: {os.path.basename(patch)} does not apply to this tree; "
              f"if the build fails there, make the same fix by hand. {reason}", file=sys.stderr)


def patched_files(source, patch_files):
    """Apply our patches to copies of the files they touch; return {relative path: patched content}."""
    if not patch_files:
        return {}
    with tempfile.TemporaryDirectory() as scratch:
        work = os.path.join(scratch, "tree")
        shutil.copytree(source, work, ignore=shutil.ignore_patterns(*SKIP_DIRS), symlinks=True)
        before = {rel: read(os.path.join(work, rel)) for rel in relative_files(work)}
        for patch in patch_files:
            apply_compat_patch(work, patch)
        return {rel: read(os.path.join(work, rel)) for rel in relative_files(work)
                if rel not in before or read(os.path.join(work, rel)) != before[rel]}


def patched_proto(proto_content):
    """caffe.proto with our additions, produced by the same patcher users run on their own trees."""
    with tempfile.TemporaryDirectory() as scratch:
        proto = os.path.join(scratch, "caffe.proto")
        with open(proto, "wb") as f:
            f.write(proto_content)
        subprocess.run([sys.executable, PROTO_PATCHER, proto], check=True, stdout=sys.stderr)
        return read(proto)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="pristine Caffe source tree (left untouched)")
    parser.add_argument("--dest", required=True, help="folder for the tree that gets built")
    args = parser.parse_args()
    source, dest = os.path.abspath(args.source), os.path.abspath(args.dest)
    if not os.path.isfile(os.path.join(source, PROTO_PATH)):
        sys.exit(f"prepare_caffe_tree: {source} does not look like a Caffe tree (no {PROTO_PATH})")

    patch_files = sorted(os.path.join(PATCHES, p) for p in os.listdir(PATCHES) if p.endswith(".patch"))
    desired = patched_files(source, patch_files)
    proto_base = desired.get(PROTO_PATH, read(os.path.join(source, PROTO_PATH)))
    desired[PROTO_PATH] = patched_proto(proto_base)
    overlay = list(relative_files(OVERLAY))
    for rel in overlay:
        desired[rel] = read(os.path.join(OVERLAY, rel))

    written = 0
    for rel in relative_files(source, SKIP_DIRS):
        src = os.path.join(source, rel)
        if os.path.islink(src):
            continue
        content = desired.pop(rel) if rel in desired else read(src)
        written += write_if_changed(os.path.join(dest, rel), content, os.stat(src).st_mode & 0o777)
    for rel, content in desired.items():  # overlay files that are new to Caffe
        written += write_if_changed(os.path.join(dest, rel), content)

    manifest = os.path.join(dest, MANIFEST)
    previous = set(read(manifest).decode().split("\n")) - {""} if os.path.exists(manifest) else set()
    for stale in previous - set(overlay):
        if not os.path.exists(os.path.join(source, stale)) and os.path.exists(os.path.join(dest, stale)):
            os.remove(os.path.join(dest, stale))
    if previous != set(overlay):
        write_if_changed(manifest, "\n".join(sorted(overlay)).encode() + b"\n")
        os.utime(os.path.join(dest, "CMakeLists.txt"))  # new or removed sources: rerun Caffe's globs
    print(f"prepare_caffe_tree: {dest} ready ({written} files written)", file=sys.stderr)


if __name__ == "__main__":
    main()
