"""Tests of scripts/prepare_caffe_tree.py on a small fake Caffe tree: the source stays untouched, the
mirror gets our overlay, patches and proto additions, and a rerun writes nothing."""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREPARE = os.path.join(REPO, "scripts", "prepare_caffe_tree.py")
PROTO_FIXTURE = os.path.join(REPO, "tests", "fixtures", "proto_patcher", "caffe_subset.proto")
IO_CPP = "src/caffe/util/io.cpp"
OVERLAY_FILE = "include/caffe_mining/common/host_device.hpp"


def io_cpp_lines(call):
    """Lines around the call our protobuf patch rewrites, as Caffe has them (the patch needs its context)."""
    return ("  CHECK_NE(fd, -1) << \"File not found: \" << filename;\n"
            "  ZeroCopyInputStream* raw_input = new FileInputStream(fd);\n"
            "  CodedInputStream* coded_input = new CodedInputStream(raw_input);\n"
            f"  coded_input->{call};\n\n"
            "  bool success = proto->ParseFromCodedStream(coded_input);\n\n")


@pytest.fixture
def fake_caffe(tmp_path):
    """A Caffe-shaped tree: caffe.proto, an io.cpp with the call our patch fixes at Caffe's line 60."""
    source = tmp_path / "caffe"
    (source / "src/caffe/proto").mkdir(parents=True)
    shutil.copy(PROTO_FIXTURE, source / "src/caffe/proto/caffe.proto")
    (source / "src/caffe/util").mkdir(parents=True)
    header = "".join(f"// line {i}\n" for i in range(1, 57))
    (source / IO_CPP).write_text(header + io_cpp_lines("SetTotalBytesLimit(kProtoReadBytesLimit, 536870912)"))
    (source / "CMakeLists.txt").write_text("project(Caffe)\n")
    return source


def prepare(source, dest):
    result = subprocess.run([sys.executable, PREPARE, "--source", str(source), "--dest", str(dest)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stderr


def snapshot(root):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_source_is_left_untouched(fake_caffe, tmp_path):
    before = snapshot(fake_caffe)
    prepare(fake_caffe, tmp_path / "mirror")
    assert snapshot(fake_caffe) == before


def test_mirror_has_overlay_patches_and_proto_additions(fake_caffe, tmp_path):
    mirror = tmp_path / "mirror"
    prepare(fake_caffe, mirror)
    assert (mirror / OVERLAY_FILE).read_bytes() == open(os.path.join(REPO, "caffe_layers", OVERLAY_FILE), "rb").read()
    assert "SetTotalBytesLimit(kProtoReadBytesLimit);" in (mirror / IO_CPP).read_text()
    proto = (mirror / "src/caffe/proto/caffe.proto").read_text()
    assert "optional int32 mining_ratio = 3" in proto
    assert "message HardNetLossParameter" in proto


def test_patch_at_an_offset_leaves_no_backup_in_the_mirror(fake_caffe, tmp_path):
    """A fork's io.cpp with the call a few lines lower: patch applies at an offset and must not add io.cpp.orig."""
    io_cpp = fake_caffe / IO_CPP
    io_cpp.write_text("// a fork's extra line\n" * 5 + io_cpp.read_text())
    mirror = tmp_path / "mirror"
    prepare(fake_caffe, mirror)
    assert "SetTotalBytesLimit(kProtoReadBytesLimit);" in (mirror / IO_CPP).read_text()
    assert [p.name for p in (mirror / "src/caffe/util").iterdir()] == ["io.cpp"]
    assert not [p for p in mirror.rglob("*") if p.suffix in (".orig", ".rej")]


def test_rerun_writes_nothing(fake_caffe, tmp_path):
    mirror = tmp_path / "mirror"
    prepare(fake_caffe, mirror)
    before = snapshot(mirror)
    assert "(0 files written)" in prepare(fake_caffe, mirror)
    assert snapshot(mirror) == before


def test_edit_in_source_reaches_mirror_and_stale_overlay_file_is_removed(fake_caffe, tmp_path):
    mirror = tmp_path / "mirror"
    prepare(fake_caffe, mirror)
    (fake_caffe / "CMakeLists.txt").write_text("project(Caffe)\n# edited\n")
    stale = mirror / "src/caffe/layers/removed_layer.cpp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("// left by an older overlay\n")
    manifest = mirror / ".caffe-mining-overlay"
    manifest.write_text(manifest.read_text() + "src/caffe/layers/removed_layer.cpp\n")
    prepare(fake_caffe, mirror)
    assert (mirror / "CMakeLists.txt").read_text().endswith("# edited\n")
    assert not stale.exists()


def test_tree_that_already_has_the_fix_is_accepted_silently(fake_caffe, tmp_path):
    (fake_caffe / IO_CPP).write_text("".join(f"// line {i}\n" for i in range(1, 57))
                                     + io_cpp_lines("SetTotalBytesLimit(kProtoReadBytesLimit)"))
    log = prepare(fake_caffe, tmp_path / "mirror")
    assert "protobuf-3.21" not in log


def test_tree_where_a_patch_does_not_apply_gets_a_warning(fake_caffe, tmp_path):
    (fake_caffe / IO_CPP).write_text("// a fork's io.cpp, rewritten\n")
    log = prepare(fake_caffe, tmp_path / "mirror")
    assert "warning: protobuf-3.21-set-total-bytes-limit.patch does not apply" in log


def readme_by_hand_commands():
    """The README's "Into your own Caffe tree, by hand" commands, without the build line."""
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = readme[readme.index("### Into your own Caffe tree, by hand"):]
    block = section[section.index("```sh\n") + 6:section.index("```\n", section.index("```sh\n") + 6)]
    lines = [line for line in block.splitlines() if "make -j" not in line]
    assert any("patches/" in line for line in lines), "the README's by-hand steps must apply patches/"
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("offset", [0, 5])
def test_readme_by_hand_steps_give_the_tree_the_superbuild_builds(fake_caffe, tmp_path, offset):
    """Run as the README says (from the clone, on the user's own tree): overlay, proto and compatibility fixes,
    the same result as the superbuild's mirror, and no io.cpp.orig; a second run changes nothing."""
    io_cpp = fake_caffe / IO_CPP
    io_cpp.write_text("// a fork's extra line\n" * offset + io_cpp.read_text())
    mirror = tmp_path / "mirror"
    prepare(fake_caffe, mirror)
    script = readme_by_hand_commands().replace("/path/to/caffe", str(fake_caffe))
    for _ in range(2):
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (fake_caffe / IO_CPP).read_bytes() == (mirror / IO_CPP).read_bytes()
        assert "SetTotalBytesLimit(kProtoReadBytesLimit);" in (fake_caffe / IO_CPP).read_text()
        proto = "src/caffe/proto/caffe.proto"
        assert (fake_caffe / proto).read_bytes() == (mirror / proto).read_bytes()
        assert (fake_caffe / OVERLAY_FILE).read_bytes() == (mirror / OVERLAY_FILE).read_bytes()
        assert not list(fake_caffe.rglob("*.rej")) and not (fake_caffe / (IO_CPP + ".orig")).exists()
