"""Tests of proto/patch_caffe_proto.py, on a cut-down fixture and on Caffe's own caffe.proto.

The real file is taken from $CAFFE_PROTO, else from the superbuild's cache of the Debian source. Where
it is missing its cases skip, unless CAFFE_MINING_REQUIRE_CAFFE=1 (CI, which builds Caffe first):
then they fail.
"""
import difflib
import importlib.util
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATCHER = os.path.join(REPO, "proto", "patch_caffe_proto.py")
FIXTURE = os.path.join(REPO, "tests", "fixtures", "proto_patcher", "caffe_subset.proto")
CAFFE_PROTO_DEFAULT = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "caffe-mining", "src",
    "caffe-1.0.0+git20180821.99bd997-8", "src", "caffe", "proto", "caffe.proto")

ADDITIONS = pathlib.Path(REPO, "proto", "additions")

SEED_000_LINE = "  optional int32 mining_ratio = 3 [default = 1];\n"
HARDNET_LINE = "  optional HardNetLossParameter hardnet_loss_param = 149;\n"
NEXT_ID_BEFORE = "// LayerParameter next available layer-specific ID: 149 (last added: clip_param)\n"


def layer_parameter_additions():
    """The lines our .fields files append to LayerParameter (each loss has its own file), in the patcher's file
    order (sorted names), read here without the patcher: what its end must hold after a patch."""
    lines = []
    for path in sorted(ADDITIONS.glob("*.fields")):
        text = path.read_text()
        if re.search(r"^//! append-to: LayerParameter$", text, re.M):
            lines += [line for line in text.splitlines(True) if not line.startswith("//!")]
    return "".join(lines)


LAYER_PARAMETER_LINES = layer_parameter_additions()
# Past the highest field number we add (Caffe's own highest is 148: clip_param).
_LAST_ADDED = max(re.findall(r"optional \w+ (\w+) = (\d+);", LAYER_PARAMETER_LINES), key=lambda f: int(f[1]))
NEXT_ID_AFTER = (f"// LayerParameter next available layer-specific ID: {int(_LAST_ADDED[1]) + 1} "
                 f"(last added: {_LAST_ADDED[0]})\n")

spec = importlib.util.spec_from_file_location("patch_caffe_proto", PATCHER)
patcher = importlib.util.module_from_spec(spec)
spec.loader.exec_module(patcher)


def real_caffe_proto():
    path = os.environ.get("CAFFE_PROTO") or CAFFE_PROTO_DEFAULT
    if not os.path.isfile(path):
        message = f"Caffe's caffe.proto not found at {path} (set CAFFE_PROTO)"
        if os.environ.get("CAFFE_MINING_REQUIRE_CAFFE") == "1":
            pytest.fail(message + "; CAFFE_MINING_REQUIRE_CAFFE=1 requires it")
        pytest.skip(message)
    return path


@pytest.fixture(params=["fixture", "caffe"])
def pristine(request, tmp_path):
    """A fresh copy named caffe.proto of the fixture, or of Caffe's real caffe.proto."""
    source = FIXTURE if request.param == "fixture" else real_caffe_proto()
    path = tmp_path / "caffe.proto"
    shutil.copyfile(source, path)
    return path


@pytest.fixture
def subset(tmp_path):
    path = tmp_path / "caffe.proto"
    shutil.copyfile(FIXTURE, path)
    return path


def run(*argv):
    return patcher.main([str(a) for a in argv])


def message_body(text, name):
    """Text between `message NAME {` and its closing brace, for files that close top-level messages
    with a '}' at the start of a line (Caffe's style); independent of the patcher's own parser."""
    match = re.search(rf"^message {name} {{\n(.*?)^}}\n", text, re.M | re.S)
    assert match, f"message {name} not found"
    return match.group(1)


def add_to_message(path, name, lines):
    """Append lines to the end of a top-level message of the file at path (a fork's edit)."""
    text = path.read_text()
    body = message_body(text, name)
    start = text.index(f"message {name} {{\n") + len(f"message {name} {{\n")
    path.write_text(text[:start + len(body)] + textwrap.indent(lines, "  ") + text[start + len(body):])


def backup_of(path):
    return path.with_name(path.name + ".orig")


def compile_and_read(proto, out, code):
    """Compile proto with protoc and run code in a fresh interpreter that imported it as pb."""
    protoc = shutil.which("protoc")
    assert protoc, "protoc is needed (Caffe's build needs it too)"
    subprocess.run([protoc, f"--proto_path={proto.parent}", f"--python_out={out}", proto.name],
                   cwd=proto.parent, check=True)
    # A fresh process: two caffe.proto files cannot share one protobuf descriptor pool.
    result = subprocess.run([sys.executable, "-c", "import caffe_pb2 as pb\n" + code], cwd=out,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- patching a pristine file ------------------------------------------------------------------

def test_patch_once_adds_our_fields_message_and_next_id(pristine):
    original = pristine.read_bytes()
    assert run(pristine) == 0
    text = pristine.read_text()

    assert message_body(text, "ContrastiveLossParameter").endswith(SEED_000_LINE)
    assert message_body(text, "LayerParameter").endswith(LAYER_PARAMETER_LINES)
    assert LAYER_PARAMETER_LINES.startswith("  // caffe-mining's HardNetLoss (see HardNetLossParameter).\n"
                                            + HARDNET_LINE)
    assert "  optional ContrastiveLossParameter contrastive_loss_param = 40;\n" in \
        message_body(text, "V1LayerParameter")  # the deprecated twin is left alone
    hardnet = message_body(text, "HardNetLossParameter")
    for line in ["optional float margin = 1 [default = 1.0];",
                 "optional bool anchor_swap = 2 [default = false];",
                 "optional BatchReduce batch_reduce = 3 [default = MIN];",
                 "optional LossType loss_type = 4 [default = TRIPLET_MARGIN];",
                 "optional float eps = 5 [default = 1e-6];",
                 "optional float duplicate_threshold = 6 [default = 0.008];",
                 "optional uint32 seed = 7;"]:
        assert f"  {line}\n" in hardnet
    # Top level, right after ContrastiveLossParameter.
    between = text[text.index("message ContrastiveLossParameter {"):text.index("message HardNetLossParameter {")]
    assert between.count("\nmessage ") == 0 and between.count("\n}\n") == 1
    assert NEXT_ID_AFTER in text and NEXT_ID_BEFORE not in text
    assert "// SolverParameter next available ID: 43 (last added: weights)\n" in text

    # Only additions, plus the one comment line replaced.
    diff = list(difflib.ndiff(original.decode().splitlines(True), text.splitlines(True)))
    assert [line[2:] for line in diff if line.startswith("- ")] == [NEXT_ID_BEFORE]
    assert backup_of(pristine).read_bytes() == original


def test_patch_twice_is_byte_identical_and_leaves_the_file_alone(pristine):
    original = pristine.read_bytes()
    assert run(pristine) == 0
    once = pristine.read_bytes()
    os.utime(pristine, ns=(10**18, 10**18))
    inode = os.stat(pristine).st_ino
    assert run(pristine) == 0
    assert pristine.read_bytes() == once
    assert os.stat(pristine).st_mtime_ns == 10**18 and os.stat(pristine).st_ino == inode  # not rewritten
    assert backup_of(pristine).read_bytes() == original  # not overwritten by the patched file


def test_existing_backup_is_never_overwritten(subset):
    backup_of(subset).write_bytes(b"an older backup\n")
    assert run(subset) == 0
    assert SEED_000_LINE in subset.read_text()
    assert backup_of(subset).read_bytes() == b"an older backup\n"


def test_seed_000_hand_patch_is_recognised(subset):
    """A tree patched by hand as seed 000 says (no comment) gets the rest, no second mining_ratio."""
    add_to_message(subset, "ContrastiveLossParameter", SEED_000_LINE.strip() + "\n")
    assert run(subset) == 0
    text = subset.read_text()
    assert text.count("mining_ratio") == 1
    assert HARDNET_LINE in text and "message HardNetLossParameter {" in text


def test_check_exit_codes_and_no_writes(subset, capsys):
    original = subset.read_bytes()
    assert run("--check", subset) == 1
    assert subset.read_bytes() == original and not backup_of(subset).exists()
    assert "hardnet_loss_param = 149" in capsys.readouterr().out
    assert run(subset) == 0
    assert run("--check", subset) == 0
    add_to_message(subset, "LayerParameter", "optional float fork_param = 170;\n")
    assert run("--check", subset) == 0  # a fork's own later fields do not matter
    subset.write_bytes(original)
    add_to_message(subset, "ContrastiveLossParameter", "optional float fork_weight = 3;\n")
    assert run("--check", subset) == 2


def test_command_line_entry_point(subset):
    def cli(*args):
        return subprocess.run([sys.executable, PATCHER, *map(str, args)], capture_output=True, text=True)
    assert cli("--check", subset).returncode == 1
    done = cli(subset)
    assert done.returncode == 0 and "hardnet_loss_param = 149" in done.stdout
    assert cli("--check", subset).returncode == 0
    assert "left untouched" in cli(subset).stdout
    missing = cli(subset.with_name("nowhere.proto"))
    assert missing.returncode == 2 and "nowhere.proto" in missing.stderr


# --- refusals ----------------------------------------------------------------------------------

CONFLICTS = {
    "contrastive number 3 taken": (
        "ContrastiveLossParameter", "optional float fork_weight = 3 [default = 0.5];\n",
        ["field number 3", "ContrastiveLossParameter", "fork_weight", "mining_ratio"]),
    "mining_ratio with another number": (
        "ContrastiveLossParameter", "optional int32 mining_ratio = 4 [default = 1];\n",
        ["`mining_ratio`", "mining_ratio = 4", "mining_ratio = 3"]),
    "mining_ratio with another type": (
        "ContrastiveLossParameter", "optional float mining_ratio = 3 [default = 1];\n",
        ["`mining_ratio`", "optional float mining_ratio = 3"]),
    "mining_ratio with another default": (
        "ContrastiveLossParameter", "optional int32 mining_ratio = 3 [default = 2];\n",
        ["`mining_ratio`", "default = 2"]),
    "layer number 149 taken": (
        "LayerParameter", "optional ClipParameter fork_param = 149;\n",
        ["field number 149", "LayerParameter", "fork_param", "hardnet_loss_param"]),
    "layer name taken": (
        "LayerParameter", "optional ClipParameter hardnet_loss_param = 150;\n",
        ["`hardnet_loss_param`", "ClipParameter hardnet_loss_param = 150"]),
    "layer number 149 reserved": (
        "LayerParameter", "reserved 120 to 149;\n", ["149", "reserved", "LayerParameter"]),
    "layer name reserved": (
        "LayerParameter", 'reserved "fork_old", "hardnet_loss_param";\n',
        ["`hardnet_loss_param`", "reserved", "LayerParameter"]),
    "layer number 149 in a oneof": (
        "LayerParameter", "oneof fork_choice {\n  ClipParameter fork_clip = 149;\n}\n",
        ["field number 149", "fork_clip"]),
}


@pytest.mark.parametrize("case", CONFLICTS)
def test_conflicting_field_is_refused_and_nothing_written(pristine, case, capsys):
    message, lines, expected = CONFLICTS[case]
    add_to_message(pristine, message, lines)
    forked = pristine.read_bytes()
    assert run(pristine) == 2
    error = capsys.readouterr().err
    assert "refusing" in error
    for words in expected:
        assert words in error
    assert pristine.read_bytes() == forked
    assert not backup_of(pristine).exists()


def test_refusal_leaves_an_existing_backup_untouched(subset, capsys):
    backup_of(subset).write_bytes(b"backup\n")
    add_to_message(subset, "LayerParameter", "optional ClipParameter fork_param = 149;\n")
    forked = subset.read_bytes()
    assert run(subset) == 2
    assert subset.read_bytes() == forked and backup_of(subset).read_bytes() == b"backup\n"


def test_every_conflict_is_named_at_once(subset, capsys):
    add_to_message(subset, "ContrastiveLossParameter", "optional float fork_weight = 3;\n")
    add_to_message(subset, "LayerParameter", "optional ClipParameter fork_param = 149;\n")
    assert run(subset) == 2
    error = capsys.readouterr().err
    assert "fork_weight" in error and "fork_param" in error


@pytest.mark.parametrize("where", ["top-level", "nested"])
def test_a_different_hardnet_message_is_refused(subset, where, capsys):
    theirs = "message HardNetLossParameter {\n  optional float margin = 1 [default = 2.0];\n}\n"
    if where == "top-level":
        subset.write_text(subset.read_text() + "\n" + theirs)
    else:  # would shadow ours as the type of LayerParameter.hardnet_loss_param
        add_to_message(subset, "LayerParameter", theirs)
    forked = subset.read_bytes()
    assert run(subset) == 2
    error = capsys.readouterr().err
    assert f"different {where} `message HardNetLossParameter`" in error
    if where == "top-level":
        assert "default = 2.0" in error and "default = 1.0" in error  # the differing statement
    assert subset.read_bytes() == forked and not backup_of(subset).exists()


def test_missing_target_message_is_an_error(subset, capsys):
    subset.write_text(subset.read_text().replace("ContrastiveLossParameter {", "ContrastiveLossParam {"))
    assert run(subset) == 2
    assert "no top-level `message ContrastiveLossParameter`" in capsys.readouterr().err


# --- forks and next-ID comment -----------------------------------------------------------------

def test_field_number_option_for_forks(pristine, capsys):
    add_to_message(pristine, "LayerParameter", "optional ClipParameter fork_param = 149;\n")
    assert run(pristine) == 2
    assert run("--field-number", "hardnet_loss_param=160", pristine) == 0
    text = pristine.read_text()
    assert "  optional HardNetLossParameter hardnet_loss_param = 160;\n" in message_body(text, "LayerParameter")
    # The comment was stale (149 was the fork's): it now names a number above every field.
    assert "// LayerParameter next available layer-specific ID: 161 (last added: hardnet_loss_param)\n" in text
    once = pristine.read_bytes()
    assert run("--field-number", "hardnet_loss_param=160", pristine) == 0 and pristine.read_bytes() == once
    assert run("--hardnet-field-number", 160, pristine) == 0  # the deprecated alias still works
    assert pristine.read_bytes() == once
    capsys.readouterr()
    assert run(pristine) == 2  # forgetting the option is a conflict, with a hint
    assert "--field-number hardnet_loss_param=160" in capsys.readouterr().err
    assert pristine.read_bytes() == once


def test_field_number_option_moves_any_field_of_ours(subset, capsys):
    """Not only HardNet's: a fork whose ContrastiveLossParameter uses 3 moves mining_ratio (and, repeated,
    hardnet_loss_param too); the hint names the field that conflicts."""
    add_to_message(subset, "ContrastiveLossParameter", "optional float fork_weight = 3;\n")
    add_to_message(subset, "LayerParameter", "optional ClipParameter fork_param = 149;\n")
    assert run(subset) == 2
    assert run("--field-number", "mining_ratio=10", "--field-number", "hardnet_loss_param=170", subset) == 0
    text = subset.read_text()
    assert message_body(text, "ContrastiveLossParameter").endswith(
        "  optional int32 mining_ratio = 10 [default = 1];\n")
    assert "hardnet_loss_param = 170;" in text
    capsys.readouterr()
    assert run("--field-number", "hardnet_loss_param=170", subset) == 2
    assert "--field-number mining_ratio=10" in capsys.readouterr().err


def test_field_number_of_an_unknown_field_is_an_error(subset, capsys):
    original = subset.read_bytes()
    assert run("--field-number", "no_such_field=160", subset) == 2
    assert "no field named no_such_field" in capsys.readouterr().err
    assert subset.read_bytes() == original


@pytest.mark.parametrize("value", ["hardnet_loss_param", "=160", "hardnet_loss_param=0", "hardnet_loss_param=x",
                                   "hardnet_loss_param=19500"])
def test_malformed_field_number_options_are_rejected(subset, value):
    with pytest.raises(SystemExit) as exit_info:
        run("--field-number", value, subset)
    assert exit_info.value.code == 2


def test_one_field_two_numbers_is_rejected(subset):
    with pytest.raises(SystemExit) as exit_info:
        run("--field-number", "hardnet_loss_param=160", "--hardnet-field-number", 161, subset)
    assert exit_info.value.code == 2


@pytest.mark.parametrize("number", ["0", "19500", "536870912", "x"])
def test_unusable_field_numbers_are_rejected(subset, number):
    with pytest.raises(SystemExit) as exit_info:
        run("--hardnet-field-number", number, subset)
    assert exit_info.value.code == 2


def test_stale_next_id_comment_gets_max_used_plus_one_and_the_real_last_field(subset):
    """SSD's fork says "next available ID: 147" but uses 200..207: the patch must not claim 208 came from
    hardnet_loss_param (149), nor trust 147."""
    subset.write_text(subset.read_text().replace(
        NEXT_ID_BEFORE, "// LayerParameter next available layer-specific ID: 147 (last added: clip_param)\n"))
    add_to_message(subset, "LayerParameter", "".join(
        f"optional ClipParameter ssd_param_{number} = {number};\n" for number in (203, 200, 207, 201)))
    assert run(subset) == 0
    text = subset.read_text()
    assert "// LayerParameter next available layer-specific ID: 208 (last added: ssd_param_207)\n" in text
    assert HARDNET_LINE in text


def test_next_id_already_beyond_ours_is_left_as_is(subset):
    subset.write_text(subset.read_text().replace(NEXT_ID_BEFORE,
                      "// LayerParameter next available layer-specific ID: 160 (last added: fork_param)\n"))
    assert run(subset) == 0
    text = subset.read_text()
    assert "// LayerParameter next available layer-specific ID: 160 (last added: fork_param)\n" in text
    assert HARDNET_LINE in text


def test_lower_field_number_in_a_gap_keeps_next_id(subset):
    assert run("--hardnet-field-number", 130, subset) == 0
    text = subset.read_text()
    assert NEXT_ID_AFTER in text  # past our highest field number, the highest number now used
    assert "hardnet_loss_param = 130;" in text


# --- the additions format -------------------------------------------------------------------

def test_additions_folder_format(subset, tmp_path):
    """Any message can take fields; every field keeps its comment; the next-ID comment follows."""
    additions = tmp_path / "additions"
    additions.mkdir()
    (additions / "solver.fields").write_text(
        "//! a note that is not copied\n"
        "//! append-to: SolverParameter\n"
        "  // first\n"
        "  optional int32 fork_a = 44;\n"
        "  // second, over\n"
        "  // two lines\n"
        "  repeated string fork_b = 43; // trailing comment\n")
    assert run("--additions", additions, subset) == 0
    text = subset.read_text()
    assert message_body(text, "SolverParameter").endswith(
        "  repeated string weights = 42;\n  // first\n  optional int32 fork_a = 44;\n"
        "  // second, over\n  // two lines\n  repeated string fork_b = 43; // trailing comment\n")
    assert "// SolverParameter next available ID: 45 (last added: fork_a)\n" in text
    assert "a note" not in text and SEED_000_LINE not in text


@pytest.mark.parametrize("content, error", [
    ("  optional int32 fork_a = 44;\n", "no '//! append-to: MESSAGE' line"),
    ("//! append-to: SolverParameter\n  optional int32 fork_a = 44; optional int32 b = 45;\n",
     "one field declaration per statement"),
    ("//! append-to: SolverParameter\n  optional int32 fork_a = 44;\n  // dangling\n",
     "text after the last field declaration"),
])
def test_malformed_additions_are_errors(subset, tmp_path, content, error, capsys):
    additions = tmp_path / "additions"
    additions.mkdir()
    (additions / "bad.fields").write_text(content)
    original = subset.read_bytes()
    assert run("--additions", additions, subset) == 2
    assert error in capsys.readouterr().err
    assert subset.read_bytes() == original


# --- parsing ----------------------------------------------------------------------------------

def test_braces_and_semicolons_in_comments_and_strings(subset):
    text = subset.read_text()
    text = text.replace(
        "  optional bool legacy_version = 2 [default = false];\n}",
        "  // a comment with braces } and semicolons; { to confuse a naive reader\n"
        "  /* a block comment } ; with } braces */\n"
        '  optional string fork_note = 4 [default = "} ; { // not a comment"];\n'
        "  optional bool legacy_version = 2 [default = false]; }")  # '}' shares the field's line
    text = text.replace("message LayerParameter {\n", "message LayerParameter {\n"
                        "  message ForkNested { optional int32 fork_inner = 149; }  // not LayerParameter's\n"
                        "  oneof fork_choice { ForkNested fork_nested = 147; }\n")
    subset.write_text(text)
    assert run(subset) == 0
    assert SEED_000_LINE in subset.read_text()
    out = compile_and_read(subset, subset.parent, textwrap.dedent("""
        c = pb.ContrastiveLossParameter()
        print(c.mining_ratio, c.fork_note)
        print(pb.LayerParameter.DESCRIPTOR.fields_by_name['hardnet_loss_param'].number)
        """))
    assert out.split("\n")[:2] == ["1 } ; { // not a comment", "149"]


def test_crlf_file_stays_crlf(subset):
    subset.write_bytes(subset.read_bytes().replace(b"\n", b"\r\n"))
    assert run(subset) == 0
    data = subset.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n")
    assert SEED_000_LINE.replace("\n", "\r\n").encode() in data
    assert run(subset) == 0 and subset.read_bytes() == data


def test_cr_only_file_is_patched_and_stays_cr_only(subset):
    """protoc takes old-Mac line endings; the patcher must read them as lines, not as one comment."""
    subset.write_bytes(subset.read_bytes().replace(b"\n", b"\r"))
    assert run(subset) == 0
    data = subset.read_bytes()
    assert b"\n" not in data
    assert SEED_000_LINE.replace("\n", "\r").encode() in data
    assert NEXT_ID_AFTER.replace("\n", "\r").encode() in data
    assert run(subset) == 0 and subset.read_bytes() == data


# --- the user's file: permissions, owner, failures -------------------------------------------

def unchanged_and_no_backup(path, original):
    assert path.read_bytes() == original
    assert not backup_of(path).exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no scratch file either


def test_read_only_file_is_refused_even_for_root(subset, capsys):
    """Root may write a 0444 file; the patcher decides by the mode bits that nobody is meant to."""
    original = subset.read_bytes()
    subset.chmod(0o444)
    assert run(subset) == 2
    error = capsys.readouterr().err
    assert "read-only" in error and "-r--r--r--" in error and "nothing changed" in error
    unchanged_and_no_backup(subset, original)
    assert stat.S_IMODE(os.stat(subset).st_mode) == 0o444
    assert run("--check", subset) == 1  # --check writes nothing, so it still answers


def test_patched_file_keeps_owner_group_mode_and_inode(subset):
    if os.geteuid() != 0:
        pytest.skip("giving the file another owner needs root")
    os.chown(subset, 65534, 65534)
    subset.chmod(0o664)
    inode = os.stat(subset).st_ino
    assert run(subset) == 0
    after = os.stat(subset)
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode), after.st_ino) == (65534, 65534, 0o664, inode)
    assert SEED_000_LINE in subset.read_text()


def test_backup_that_cannot_be_written_changes_nothing(subset, monkeypatch, capsys):
    """A writable caffe.proto in a read-only folder: the backup cannot be made, so nothing is patched."""
    original = subset.read_bytes()
    real_open = open

    def read_only_folder(path, mode="r", *args, **kwargs):
        if str(path).endswith(".orig") and "x" in mode:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr(patcher, "open", read_only_folder, raising=False)
    assert run(subset) == 2
    error = capsys.readouterr().err
    assert "cannot save the original as" in error and "folder must be writable" in error
    unchanged_and_no_backup(subset, original)


def test_file_that_cannot_be_opened_for_writing_leaves_no_backup(subset, monkeypatch, capsys):
    """What an immutable file (chattr +i) or a read-only mount does: open for writing fails."""
    original = subset.read_bytes()
    real_open = open

    def immutable(path, mode="r", *args, **kwargs):
        if str(path).endswith("caffe.proto") and "+" in mode:
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr(patcher, "open", immutable, raising=False)
    assert run(subset) == 2
    assert "Operation not permitted" in capsys.readouterr().err
    unchanged_and_no_backup(subset, original)


def test_failed_write_restores_the_file_and_removes_the_new_backup(subset, monkeypatch, capsys):
    original = subset.read_bytes()
    real_rewrite = patcher.rewrite

    def disk_full_once(f, content):
        if content != original:
            f.seek(0)
            f.write(content[:100])  # a partial write, then the error
            raise OSError(28, "No space left on device")
        real_rewrite(f, content)
    monkeypatch.setattr(patcher, "rewrite", disk_full_once)
    assert run(subset) == 2
    assert "No space left on device" in capsys.readouterr().err
    unchanged_and_no_backup(subset, original)


@pytest.fixture
def immutable_file(subset):
    if subprocess.run(["chattr", "+i", str(subset)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root and a file system that supports it)")
    yield subset
    subprocess.run(["chattr", "-i", str(subset)], check=True)


def test_immutable_file_gives_a_message_and_no_stray_backup(immutable_file):
    original = immutable_file.read_bytes()
    result = subprocess.run([sys.executable, PATCHER, str(immutable_file)], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "immutable" in result.stderr
    unchanged_and_no_backup(immutable_file, original)


@pytest.fixture
def foreign_user_copy():
    """A tree and a copy of the patcher that user nobody can reach (pytest's tmp folders are root's 0700),
    and a function running the patcher as nobody: the permission cases that root would pass through."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the patcher as another user")
    root = tempfile.mkdtemp(prefix="patcher-as-nobody-")
    os.chmod(root, 0o755)
    tool = os.path.join(root, "tool")
    shutil.copytree(os.path.dirname(PATCHER), tool)
    folder = pathlib.Path(root) / "tree"
    folder.mkdir()
    shutil.copyfile(FIXTURE, folder / "caffe.proto")

    def patch(*argv):
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               os.path.realpath(sys.executable), os.path.join(tool, "patch_caffe_proto.py"),
                               *map(str, argv)], capture_output=True, text=True)
    yield folder, patch
    shutil.rmtree(root)


def test_writable_file_in_a_read_only_folder_is_refused_cleanly(foreign_user_copy):
    folder, patch = foreign_user_copy
    proto = folder / "caffe.proto"
    proto.chmod(0o666)  # the file is writable for nobody, its root-owned 0755 folder is not
    original = proto.read_bytes()
    result = patch(proto)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "cannot save the original" in result.stderr
    unchanged_and_no_backup(proto, original)
    assert patch("--check", proto).returncode == 1


def test_root_owned_file_patched_by_another_user_stays_root_owned(foreign_user_copy):
    folder, patch = foreign_user_copy
    folder.chmod(0o777)
    proto = folder / "caffe.proto"
    proto.chmod(0o666)
    result = patch(proto)
    assert result.returncode == 0, result.stderr
    after = os.stat(proto)
    assert (after.st_uid, stat.S_IMODE(after.st_mode)) == (0, 0o666)
    assert SEED_000_LINE in proto.read_text()
    assert backup_of(proto).read_bytes() == open(FIXTURE, "rb").read()


def test_file_another_user_cannot_write_is_refused(foreign_user_copy):
    folder, patch = foreign_user_copy
    folder.chmod(0o777)  # today's rename would replace it: the folder allows that, the file does not
    proto = folder / "caffe.proto"
    proto.chmod(0o644)
    original = proto.read_bytes()
    result = patch(proto)
    assert result.returncode == 2 and "not writable" in result.stderr, result.stderr
    unchanged_and_no_backup(proto, original)


# --- the result compiles and has our defaults ------------------------------------------------

def test_patched_file_compiles_with_protoc_and_has_our_defaults(pristine, tmp_path):
    assert run(pristine) == 0
    out = tmp_path / "generated"
    out.mkdir()
    printed = compile_and_read(pristine, out, textwrap.dedent("""
        layer = pb.LayerParameter()
        h = layer.hardnet_loss_param
        field = pb.LayerParameter.DESCRIPTOR.fields_by_name['hardnet_loss_param']
        print(pb.ContrastiveLossParameter().mining_ratio,
              pb.ContrastiveLossParameter.DESCRIPTOR.fields_by_name['mining_ratio'].number)
        print(field.number, field.message_type.full_name)
        print(h.margin, h.anchor_swap, h.batch_reduce == h.MIN, h.loss_type == h.TRIPLET_MARGIN,
              h.HasField('seed'), h.seed)
        print(repr(h.eps), repr(h.duplicate_threshold))
        print(sorted(pb.HardNetLossParameter.BatchReduce.keys()),
              sorted(pb.HardNetLossParameter.LossType.keys()))
        """))
    lines = printed.splitlines()
    assert lines[0] == "1 3"
    assert lines[1] == "149 caffe.HardNetLossParameter"
    assert lines[2] == "1.0 False True True False 0"
    eps, duplicate_threshold = map(float, lines[3].split())
    assert eps == pytest.approx(1e-6, rel=1e-6) and duplicate_threshold == pytest.approx(0.008, rel=1e-6)
    assert lines[4] == "['AVERAGE', 'MIN', 'RANDOM'] ['CONTRASTIVE', 'SOFTMAX', 'TRIPLET_MARGIN']"
