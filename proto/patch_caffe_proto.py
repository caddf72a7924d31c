#!/usr/bin/env python3
"""Add caffe-mining's fields and messages (proto/additions/) to a Caffe tree's caffe.proto.

    python3 proto/patch_caffe_proto.py path/to/src/caffe/proto/caffe.proto
    python3 proto/patch_caffe_proto.py --check path/to/caffe.proto   # 0 patched, 1 not yet
    python3 proto/patch_caffe_proto.py --field-number hardnet_loss_param=160 caffe.proto  # a fork uses 149

Idempotent: a file that already holds exactly our additions is left untouched (not rewritten).
The first run that changes the file saves the original beside it as caffe.proto.orig (never
overwritten). When a field number or name we need is taken by something else in the target
message (forks add fields), or a different HardNetLossParameter exists, nothing is written and
the conflict is named; `--field-number NAME=N` moves any field of ours to another number. The
"next available ID" comment of a message we add fields to is moved past the highest number the
message uses. LF, CRLF and CR-only line endings are kept.

The file is rewritten in place, so it keeps its owner, mode, links and inode. A file without a
write permission bit for you is refused, root included (root could write a 0444 file, but a
read-only caffe.proto says "do not edit"; chmod u+w it if you mean to). The backup needs a
writable folder. Any failure restores the file and removes a backup made by this run.

Exit status: 0 patched (or already patched); 1 --check only: not patched yet; 2 refused
(conflict), bad input, or the file cannot be written (nothing changed).

Additions files (proto/additions/): "//!" lines are notes for the reader, or directives
"//! append-to: MESSAGE" (a .fields file: each field with the comment lines above it is appended
to that message's body) and "//! insert-after: MESSAGE" (a .proto file: one top-level message,
with its comments, inserted after that message). Every other line is copied verbatim.
"""
import argparse
import difflib
import os
import re
import stat
import sys
from dataclasses import dataclass, field as dataclass_field

ADDITIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "additions")
HARDNET_FIELD = "hardnet_loss_param"  # --hardnet-field-number, the deprecated alias
EXIT_OK, EXIT_NOT_PATCHED, EXIT_REFUSED = 0, 1, 2
MAX_FIELD_NUMBER = 536870911  # 2^29 - 1
PROTOBUF_RESERVED_NUMBERS = range(19000, 20000)


class PatchError(Exception):
    """The patch cannot be applied (conflict or malformed input); nothing was written."""


# ---------------------------------------------------------------------------------------------
# A small proto2 reader: enough structure to find message bodies and their fields.
# ---------------------------------------------------------------------------------------------

def blank_out(text, strings=True):
    """text with comments (and, if strings, string literal contents) replaced by spaces.

    Same length and same newlines as text, so positions and line numbers carry over; braces and
    semicolons inside comments or strings no longer count.
    """
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end == -1 else end
            out[i:end] = " " * (end - i)
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end == -1 else end + 2
            out[i:end] = [ch if ch == "\n" else " " for ch in text[i:end]]
            i = end
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            end = min(j, n)
            if strings:
                out[i + 1:end] = " " * (end - i - 1)
            i = end + 1
        else:
            i += 1
    return "".join(out)


TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|[\w.+-]+|\S')


def normalized(code):
    """Comment-free code as a token string, so spacing and line breaks do not matter."""
    return " ".join(TOKEN.findall(blank_out(code, strings=False)))


LABELS = ("optional", "required", "repeated")
NOT_TYPES = {"option", "reserved", "extensions", "extend", "message", "enum", "oneof", "import",
             "package", "syntax", "service", "rpc", "group"}
FIELD = re.compile(r"""\s*(?:(?P<label>optional|required|repeated)\s+)?
                       (?P<type>\.?[A-Za-z_][\w.]*|map\s*<[^>]*>)\s+
                       (?P<name>[A-Za-z_]\w*)\s*=\s*(?P<number>0[xX][0-9a-fA-F]+|\d+)
                       \s*(?P<options>\[.*\])?\s*$""", re.X | re.S)
GROUP = re.compile(r"\s*(?P<label>optional|required|repeated)\s+group\s+(?P<name>[A-Za-z_]\w*)\s*="
                   r"\s*(?P<number>\d+)", re.S)
BLOCK = re.compile(r"\s*(?P<kind>message|enum|oneof|extend|service)\s+(?P<name>[A-Za-z_][\w.]*)\s*$")


@dataclass
class Field:
    name: str
    number: int
    start: int  # position of the declaration's first character in the file
    code: str   # the declaration without comments

    def describe(self, text):
        return f"`{' '.join(self.code.split())}` (line {line_of(text, self.start)})"


@dataclass
class Block:
    kind: str   # message, enum, oneof, extend, service
    name: str
    start: int  # position of the keyword
    close: int  # position of the matching '}'
    fields: list = dataclass_field(default_factory=list)         # this message's own fields
    children: list = dataclass_field(default_factory=list)       # nested blocks
    reserved_numbers: list = dataclass_field(default_factory=list)  # (first, last, line)
    reserved_names: list = dataclass_field(default_factory=list)    # (name, line)


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def parse_number(token):
    return int(token, 16) if token.lower().startswith("0x") else int(token)


def matching_brace(bare, open_pos, end):
    depth = 0
    for i in range(open_pos, end):
        if bare[i] == "{":
            depth += 1
        elif bare[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise PatchError(f"unbalanced braces: '{{' at line {line_of(bare, open_pos)} is never closed")


def parse_body(text, bare, start, end, block):
    """Fill block with the statements between start and end (a file or a block's body)."""
    stmt_start, brackets, i = start, 0, start
    while i < end:
        c = bare[i]
        if c == "[":
            brackets += 1
        elif c == "]":
            brackets = max(0, brackets - 1)
        elif c == ";" and brackets == 0:
            parse_statement(text, bare, stmt_start, i + 1, block)
            stmt_start = i + 1
        elif c == "{" and brackets == 0:
            close = matching_brace(bare, i, end)
            header = bare[stmt_start:i]
            group = GROUP.match(header)
            named = BLOCK.match(header)
            if group:  # a proto2 group is a field with its own message body
                first = stmt_start + len(header) - len(header.lstrip())
                block.fields.append(Field(group["name"], int(group["number"]), first,
                                          blank_out(text[first:i], strings=False).strip()))
            elif named:
                child = Block(named["kind"], named["name"], stmt_start + header.index(named["kind"]),
                              close)
                parse_body(text, bare, i + 1, close, child)
                block.children.append(child)
                if child.kind == "oneof":  # a oneof's fields belong to the enclosing message
                    block.fields.extend(child.fields)
            stmt_start = i = close + 1
            continue
        elif c == "}" and brackets == 0:
            raise PatchError(f"unbalanced braces: unexpected '}}' at line {line_of(text, i)}")
        i += 1


def parse_statement(text, bare, start, end, block):
    code = blank_out(text[start:end - 1], strings=False)
    first = start + len(code) - len(code.lstrip())
    match = FIELD.match(bare[start:end - 1])
    if match and match["type"] not in NOT_TYPES and match["name"] not in NOT_TYPES:
        block.fields.append(Field(match["name"], parse_number(match["number"]), first,
                                  code.strip() + ";"))
        return
    words = code.split(None, 1)
    if len(words) == 2 and words[0] in ("reserved", "extensions"):
        line = line_of(text, first)
        ranges = re.sub(r"\[.*", "", words[1], flags=re.S)  # drop extension options
        for name in re.findall(r"\"(\w+)\"|'(\w+)'", ranges):
            block.reserved_names.append((name[0] or name[1], line))
        for low, high in re.findall(r"\b(0[xX][0-9a-fA-F]+|\d+)(?:\s+to\s+(0[xX][0-9a-fA-F]+|\d+|max))?",
                                    re.sub(r"\"[^\"]*\"|'[^']*'", " ", ranges)):
            last = MAX_FIELD_NUMBER if high == "max" else parse_number(high or low)
            block.reserved_numbers.append((parse_number(low), last, line))


def parse_proto(text):
    """The file as a Block of kind 'file' whose children are the top-level definitions."""
    bare = blank_out(text)
    root = Block("file", "", 0, len(text))
    parse_body(text, bare, 0, len(text), root)
    return root


def top_level_message(root, name, source="the file"):
    found = [b for b in root.children if b.kind == "message" and b.name == name]
    if not found:
        raise PatchError(f"no top-level `message {name}` in {source}")
    if len(found) > 1:
        raise PatchError(f"`message {name}` is defined {len(found)} times in {source}")
    return found[0]


def all_definitions(block):
    for child in block.children:
        yield child
        yield from all_definitions(child)


# ---------------------------------------------------------------------------------------------
# Additions: what we add, read from proto/additions/.
# ---------------------------------------------------------------------------------------------

@dataclass
class FieldItem:
    text: str    # comment lines + declaration, each line ending with '\n'
    name: str
    number: int
    code: str    # normalized declaration


@dataclass
class FieldsAddition:
    source: str
    target: str
    items: list


@dataclass
class MessageAddition:
    source: str
    after: str
    name: str
    text: str    # comments + message, ending with '\n'
    code: str    # normalized message


def read_addition(path):
    """(directives, body lines) of an additions file."""
    directives, body = {}, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("//!"):
                match = re.match(r"//!\s*(append-to|insert-after)\s*:\s*(\w+)\s*$", line)
                if match:
                    directives[match[1]] = match[2]
            else:
                body.append(line.rstrip() + "\n")
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    return directives, body


def load_fields(path, target, lines, numbers):
    """Split a .fields body into fields, each with the comment lines above it."""
    items, pending = [], []
    for line in lines:
        pending.append(line)
        if ";" not in blank_out(line):
            continue
        text = "".join(pending)
        pending = []
        match = FIELD.match(blank_out(text).strip().rstrip(";"))
        if not match or blank_out(text).count(";") != 1:
            raise PatchError(f"{path}: expected one field declaration per statement, got:\n{text}")
        name, number = match["name"], parse_number(match["number"])
        if name in numbers:  # a field number chosen on the command line: rewrite the declaration
            number = numbers[name]
            old = re.search(rf"\b{name}\s*=\s*(0[xX][0-9a-fA-F]+|\d+)", blank_out(text))
            text = text[:old.start(1)] + str(number) + text[old.end(1):]
        items.append(FieldItem(text, name, number, normalized(text)))
    if any(line.strip() for line in pending):
        raise PatchError(f"{path}: text after the last field declaration:\n{''.join(pending)}")
    if not items:
        raise PatchError(f"{path}: no field declaration")
    return FieldsAddition(path, target, items)


def load_additions(additions_dir=ADDITIONS_DIR, numbers=None):
    """The additions of additions_dir: messages first (fields may use their types), then fields.

    numbers: {field name: field number} replacing the numbers written in the files.
    """
    numbers = dict(numbers or {})
    messages, fields = [], []
    for name in sorted(os.listdir(additions_dir)):
        path = os.path.join(additions_dir, name)
        if name.endswith(".fields"):
            directives, lines = read_addition(path)
            if "append-to" not in directives:
                raise PatchError(f"{path}: no '//! append-to: MESSAGE' line")
            fields.append(load_fields(path, directives["append-to"], lines, numbers))
        elif name.endswith(".proto"):
            directives, lines = read_addition(path)
            if "insert-after" not in directives:
                raise PatchError(f"{path}: no '//! insert-after: MESSAGE' line")
            text = "".join(lines)
            root = parse_proto(text)
            if len(root.children) != 1 or root.children[0].kind != "message" or root.fields:
                raise PatchError(f"{path}: expected exactly one top-level message")
            message = root.children[0]
            messages.append(MessageAddition(path, directives["insert-after"], message.name, text,
                                            normalized(text[message.start:message.close + 1])))
    unknown = set(numbers) - {item.name for addition in fields for item in addition.items}
    if unknown:
        raise PatchError(f"no field named {', '.join(sorted(unknown))} in {additions_dir}")
    return messages + fields


# ---------------------------------------------------------------------------------------------
# Patching.
# ---------------------------------------------------------------------------------------------

@dataclass
class PatchResult:
    text: str
    changes: list   # human-readable, one line each; empty when the file was already patched
    conflicts: list


def insert(text, pos, addition):
    return text[:pos] + addition + text[pos:]


def apply_message(text, addition, changes, conflicts):
    root = parse_proto(text)
    top_level = {id(b) for b in root.children}
    same_name = [b for b in all_definitions(root) if b.name == addition.name]
    ours = [b for b in same_name if id(b) in top_level and b.kind == "message"
            and normalized(text[b.start:b.close + 1]) == addition.code]
    for other in same_name:
        if any(other is mine for mine in ours):
            continue
        where = "top-level" if id(other) in top_level else "nested"
        conflict = (f"a different {where} `{other.kind} {addition.name}` is already defined at line "
                    f"{line_of(text, other.start)}; ours is {os.path.relpath(addition.source)}")
        if other.kind == "message" and id(other) in top_level:
            theirs = normalized(text[other.start:other.close + 1]).replace(" ; ", " ;\n").splitlines()
            wanted = addition.code.replace(" ; ", " ;\n").splitlines()
            diff = [d for d in difflib.unified_diff(theirs, wanted, "in the file", "ours", n=0,
                                                   lineterm="") if d[:1] in "+-"]
            conflict += "; statements that differ (comments ignored):\n    " + "\n    ".join(diff[:12])
        conflicts.append(conflict)
    if conflicts or same_name:  # a conflict, or ours is already there
        return text
    after = top_level_message(root, addition.after)
    line_end = text.find("\n", after.close)
    if line_end == -1:
        text, line_end = text + "\n", len(text)
    changes.append(f"+ message {addition.name} (after {addition.after})")
    return insert(text, line_end + 1, "\n" + addition.text)


def field_conflicts(text, message, item):
    """Why item cannot go into message (empty when it can), and whether it is already there."""
    problems, present = [], False
    for existing in message.fields:
        if existing.name == item.name:
            if normalized(existing.code) == item.code:
                present = True
                continue
            problem = (f"`message {message.name}` already has a field named `{item.name}`: "
                       f"{existing.describe(text)}, not ours `{' '.join(item.code.split())}`")
            if normalized(re.sub(r"=\s*\w+", "= N", existing.code, count=1)) == \
                    normalized(re.sub(r"=\s*\w+", "= N", item.code, count=1)):
                problem += (f" (patched before with --field-number {item.name}={existing.number}? "
                            f"pass the same option again)")
            problems.append(problem)
        elif existing.number == item.number:
            problems.append(f"field number {item.number} of `message {message.name}` is already taken "
                            f"by {existing.describe(text)}; we need it for `{item.name}`")
    for first, last, line in message.reserved_numbers:
        if first <= item.number <= last:
            problems.append(f"field number {item.number} of `message {message.name}` is reserved "
                            f"(line {line}); we need it for `{item.name}`")
    for name, line in message.reserved_names:
        if name == item.name:
            problems.append(f"field name `{item.name}` of `message {message.name}` is reserved "
                            f"(line {line})")
    return problems, present


NEXT_ID = r"(//[^\n]*\b{name} next available\b[^\n]*?\bID:\s*)(\d+)((?:\s*\(last added:\s*)([\w.]+)\))?"


def update_next_id(text, message_name, ours, changes):
    """Keep the "MESSAGE next available ... ID: N (last added: X)" comment above our numbers.

    When our numbers reach N, N becomes the highest number the message uses + 1 and X that field's
    name: a fork's stale comment (SSD says 147 but uses up to 207) is not trusted.
    """
    pattern = re.compile(NEXT_ID.format(name=re.escape(message_name)))
    match = pattern.search(text)
    if not match:
        return text
    current = int(match[2])
    if current > max(item.number for item in ours):
        return text
    message = top_level_message(parse_proto(text), message_name)
    highest = max(message.fields, key=lambda field: field.number)
    wanted = highest.number + 1
    new = match[1] + str(wanted) + (f" (last added: {highest.name})" if match[3] else "")
    changes.append(f"  {message_name} next available ID: {current} -> {wanted}")
    return text[:match.start()] + new + text[match.end():]


def apply_fields(text, addition, changes, conflicts):
    message = top_level_message(parse_proto(text), addition.target)
    missing = []
    for item in addition.items:
        problems, present = field_conflicts(text, message, item)
        conflicts.extend(problems)
        if not problems and not present:
            missing.append(item)
    if conflicts:
        return text
    if missing:
        close = message.close
        line_start = text.rfind("\n", 0, close) + 1
        block = "".join(item.text for item in missing)
        if text[line_start:close].strip():  # '}' shares its line with code: give it a line of its own
            text = insert(text, close, "\n" + block)
        else:
            text = insert(text, line_start, block)
        for item in missing:
            changes.append(f"+ {addition.target}.{item.name} = {item.number}")
    return update_next_id(text, addition.target, addition.items, changes)


def newline_of(text):
    """The file's line ending when it is CRLF or CR-only throughout, else "\n" (the file is read as is)."""
    if "\r\n" in text and text.count("\r\n") == text.count("\n"):
        return "\r\n"
    if "\r" in text and "\n" not in text:
        return "\r"
    return "\n"


def patch_text(text, additions):
    """PatchResult of applying additions (from load_additions) to the contents of a caffe.proto."""
    newline = newline_of(text)
    work = text.replace(newline, "\n")
    changes, conflicts = [], []
    for addition in additions:
        if isinstance(addition, MessageAddition):
            work = apply_message(work, addition, changes, conflicts)
        else:
            work = apply_fields(work, addition, changes, conflicts)
    if conflicts:
        return PatchResult(text, [], conflicts)
    return PatchResult(work.replace("\n", newline), changes, [])


class WriteError(Exception):
    """The file cannot be written; it was left (or put back) as it was."""


def why_not_writable(path, st):
    """Why this user may not rewrite the file, or None when it may.

    Root passes every permission check, so os.access alone would let it patch a 0444 file; a file
    with no write bit for anyone is taken as "do not edit" and refused for root too.
    """
    mode = f"mode {stat.filemode(st.st_mode)}, owner uid {st.st_uid}"
    if os.geteuid() == 0 and not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return f"it is read-only ({mode}); make it writable (chmod u+w) if you mean to patch it"
    if not os.access(path, os.W_OK):
        if os.geteuid() == 0:
            return f"it cannot be written ({mode}): immutable (lsattr) or on a read-only file system?"
        return f"it is not writable for you ({mode})"
    return None


def rewrite(f, content):
    f.seek(0)
    f.write(content)
    f.truncate()
    f.flush()


def write_patched(path, original, patched, backup):
    """Save original as backup (unless one exists) and rewrite path in place with patched.

    In place, not by rename: owner, group, mode, hard links and ACLs stay as they are, and a
    read-only folder only matters for the backup. Returns whether the backup was made now. On any
    failure the file holds original again, a backup made here is removed, and WriteError says why.
    """
    st = os.stat(path)
    reason = why_not_writable(path, st)
    if reason:
        raise WriteError(f"cannot patch {path}: {reason}")
    try:
        target = open(path, "r+b")  # an immutable file (chattr +i) or a read-only mount fails here
    except OSError as error:
        raise WriteError(f"cannot open {path} for writing ({error.strerror})") from None
    with target:
        made_backup = False
        if not os.path.exists(backup):
            try:
                saved = open(backup, "xb")
            except OSError as error:
                raise WriteError(f"cannot save the original as {backup} ({error.strerror}); the folder must "
                                 "be writable for the backup") from None
            made_backup = True
            try:
                with saved:
                    saved.write(original)
            except OSError as error:
                os.unlink(backup)
                raise WriteError(f"cannot save the original as {backup} ({error.strerror})") from None
        try:
            rewrite(target, patched)
        except OSError as error:
            rewrite(target, original)  # should this fail too, the backup stays: it is the original's copy
            if made_backup:
                os.unlink(backup)
            raise WriteError(f"cannot write {path} ({error.strerror}); it holds its original text again") from None
    return made_backup


def field_number(value):
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_FIELD_NUMBER or number in PROTOBUF_RESERVED_NUMBERS:
        raise argparse.ArgumentTypeError(f"{value} is not a usable field number "
                                         f"(1..{MAX_FIELD_NUMBER}, not 19000..19999)")
    return number


def name_and_number(value):
    name, equals, number = value.partition("=")
    if not equals or not re.fullmatch(r"[A-Za-z_]\w*", name.strip()):
        raise argparse.ArgumentTypeError(f"expected NAME=N (e.g. {HARDNET_FIELD}=160). Got: {value!r}")
    return name.strip(), field_number(number.strip())


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="patch_caffe_proto.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("\n\n") + 2:], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("proto", help="the caffe.proto to patch in place (src/caffe/proto/caffe.proto)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 0 if the file is already patched, 1 if not")
    parser.add_argument("--field-number", type=name_and_number, action="append", default=[],
                        metavar="NAME=N",
                        help="give our field NAME (any field of proto/additions/*.fields, e.g. "
                             f"{HARDNET_FIELD}=160 or mining_ratio=10) number N instead of the one written "
                             "there; for forks that already use it. Repeatable")
    parser.add_argument("--hardnet-field-number", type=field_number, metavar="N",
                        help=f"deprecated: the same as --field-number {HARDNET_FIELD}=N")
    parser.add_argument("--additions", default=ADDITIONS_DIR, metavar="DIR",
                        help="folder of additions files (default: %(default)s)")
    args = parser.parse_args(argv)
    pairs = list(args.field_number)
    if args.hardnet_field_number is not None:
        pairs.append((HARDNET_FIELD, args.hardnet_field_number))
    args.numbers = {}
    for name, number in pairs:
        if args.numbers.get(name, number) != number:
            parser.error(f"field {name} is given two numbers: {args.numbers[name]} and {number}")
        args.numbers[name] = number
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    prog = "patch_caffe_proto"
    path = os.path.realpath(args.proto)  # patch a symlink's target, keep the link
    try:
        additions = load_additions(args.additions, args.numbers)
        with open(path, "rb") as f:
            original = f.read()
        result = patch_text(original.decode("utf-8"), additions)
    except (PatchError, OSError, UnicodeDecodeError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_REFUSED
    if result.conflicts:
        print(f"{prog}: refusing to patch {args.proto}, left untouched:", file=sys.stderr)
        for conflict in result.conflicts:
            print(f"  - {conflict}", file=sys.stderr)
        return EXIT_REFUSED
    if not result.changes:
        print(f"{prog}: {args.proto} is already patched" + ("" if args.check else ", left untouched"))
        return EXIT_OK
    if args.check:
        print(f"{prog}: {args.proto} is not patched; patching would make these changes:")
        print("\n".join(result.changes))
        return EXIT_NOT_PATCHED
    backup = path + ".orig"
    try:
        made_backup = write_patched(path, original, result.text.encode("utf-8"), backup)
    except (WriteError, OSError) as error:
        print(f"{prog}: error: {error}; nothing changed", file=sys.stderr)
        return EXIT_REFUSED
    saved = f"original saved as {backup}" if made_backup else f"kept the existing backup {backup}"
    print(f"{prog}: patched {args.proto} ({saved}):")
    print("\n".join(result.changes))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
