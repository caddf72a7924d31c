"""Options stated once: each loss's options class (caffe_mining.losses.*) holds the Python defaults, and they are
the proto's (the user's source of truth: proto/additions/ here, the compiled caffe_pb2 with pycaffe), the bindings'
(the keyword defaults of _core and _core_cuda) and the reference's (its own literals, independent on purpose)."""
import ast
import dataclasses
import importlib
import inspect
import pathlib
import re

import numpy as np
import pytest

from caffe_mining import _core
from caffe_mining.losses import LOSSES

ADDITIONS = pathlib.Path(__file__).resolve().parent.parent / "proto" / "additions"
SPECS = list(LOSSES.values())


def message_name(proto_param: str) -> str:
    """caffe.proto's naming: hardnet_loss_param is a HardNetLossParameter, contrastive_loss_param a
    ContrastiveLossParameter (a LayerParameter field written in our additions names its message itself)."""
    for path in sorted(ADDITIONS.glob("*.fields")):
        declared = re.search(rf"optional (\w+) {proto_param} = \d+;", path.read_text())
        if declared:
            return declared.group(1)
    return "".join(part.capitalize() for part in proto_param.split("_")) + "eter"


def additions(texts=None):
    """{message: {field: (type, default text or None)}} and {enum: [names by value]} of proto/additions/ (or of
    ``texts``, file name -> text)."""
    messages, enums = {}, {}
    texts = texts or {path.name: path.read_text() for path in sorted(ADDITIONS.glob("*"))}
    for file_name, text in texts.items():
        target = re.search(r"^//! append-to: (\w+)", text, re.M)
        current = target.group(1) if target else None
        enum = None
        for line in text.splitlines():
            line = line.split("//")[0].strip()
            if m := re.match(r"message (\w+) \{", line):
                current = m.group(1)
            elif m := re.match(r"enum (\w+) \{", line):
                enum = enums.setdefault(m.group(1), [])
            elif enum is not None and (m := re.match(r"(\w+) = (\d+);", line)):
                assert int(m.group(2)) == len(enum), f"{file_name}: enum values must count up from 0: {line}"
                enum.append(m.group(1))
            elif line == "}" and enum is not None:
                enum = None
            elif m := re.match(r"optional (\w+) (\w+) = \d+(?: \[default = ([^\]]+)\])?;", line):
                messages.setdefault(current, {})[m.group(2)] = (m.group(1), m.group(3))
    return messages, enums


def proto_value(type_name: str, text: str):
    if type_name in ("float", "double"):
        return float(text)
    if type_name in ("int32", "uint32", "int64", "uint64"):
        return int(text)
    if type_name == "bool":
        return {"true": True, "false": False}[text]
    return text  # an enum: the value's name


def option_defaults(spec):
    return {field.name: field.default for field in dataclasses.fields(spec.options_class)}


def additions_mismatches(spec, texts=None):
    messages, enums = additions(texts)
    fields = messages.get(message_name(spec.options_class.proto_param), {})
    defaults = option_defaults(spec)
    assert fields or spec.type_name == "MiningContrastiveLoss", "every loss of ours has proto additions"
    for name, (type_name, text) in fields.items():
        assert name in defaults, f"{name} is in the proto but not in {spec.options_class.__name__}"
        expected = None if text is None else proto_value(type_name, text)
        if defaults[name] != expected or type(defaults[name]) is not type(expected):
            yield f"{name}: {defaults[name]!r} in Python, {text} in the proto"
        if type_name in enums and spec.options_class.choices[name] != tuple(enums[type_name]):
            yield f"{name}: choices {spec.options_class.choices[name]} in Python, {enums[type_name]} in the proto"
    assert set(spec.options_class.choices) <= set(fields)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type_name)
def test_additions_state_the_options_defaults(spec):
    assert list(additions_mismatches(spec)) == []


def test_a_changed_proto_default_or_enum_is_caught():
    texts = {path.name: path.read_text() for path in sorted(ADDITIONS.glob("*"))}
    name = "hardnet_loss_parameter.proto"
    planted = dict(texts, **{name: texts[name].replace("[default = 0.008]", "[default = 0.009]")
                                                .replace("AVERAGE = 1;", "MEAN = 1;")})
    assert len(list(additions_mismatches(LOSSES["HardNetLoss"], planted))) == 2


def test_the_additions_are_read():
    """The parser above finds what it checks (a parser that finds nothing would pass everything)."""
    messages, enums = additions()
    assert messages["ContrastiveLossParameter"] == {"mining_ratio": ("int32", "1")}
    assert set(messages["HardNetLossParameter"]) == {"margin", "anchor_swap", "batch_reduce", "loss_type", "eps",
                                                      "duplicate_threshold", "seed"}
    assert enums["BatchReduce"] == ["MIN", "AVERAGE", "RANDOM"]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type_name)
def test_compiled_proto_defaults_are_the_options_defaults(caffe, spec):
    """Against caffe_pb2: the patched caffe.proto as built, Caffe's own fields (margin, legacy_version) included."""
    from caffe.proto import caffe_pb2

    message = getattr(caffe_pb2.LayerParameter(), spec.options_class.proto_param)
    defaults = option_defaults(spec)
    assert set(defaults) == set(message.DESCRIPTOR.fields_by_name)
    for name, field in message.DESCRIPTOR.fields_by_name.items():
        if not field.has_default_value:
            assert defaults[name] is None, name
        elif field.enum_type is not None:
            assert defaults[name] == field.enum_type.values_by_number[field.default_value].name, name
        elif field.type == field.TYPE_FLOAT:  # float32 in the proto
            assert np.float32(defaults[name]) == np.float32(field.default_value), name
        else:
            assert defaults[name] == field.default_value and type(defaults[name]) is type(field.default_value), name


def bound_defaults(function):
    """The keyword defaults of a pybind11 function, from its signature line."""
    signature = function.__doc__.splitlines()[0]
    return {name: ast.literal_eval(value)
            for name, value in re.findall(r"(\w+): [^=,()]*(?:\([^)]*\))?[^=,()]* = ('[^']*'|[\w.+-]+)", signature)}


def bound_functions():
    """(spec, module name, function name, defaults) of every bound function taking options: each belongs to the
    loss with the most option names among its keywords."""
    modules = [_core]
    try:
        modules.append(importlib.import_module("caffe_mining._core_cuda"))
    except ImportError:
        pass
    found = []
    for module in modules:
        for name, function in vars(module).items():
            if name.startswith("_") or not callable(function) or not (function.__doc__ or "").startswith(name):
                continue
            defaults = bound_defaults(function)
            overlap = {spec.type_name: len(set(defaults) & set(option_defaults(spec))) for spec in SPECS}
            best = max(overlap.values())
            if best:
                owners = [LOSSES[t] for t, count in overlap.items() if count == best]
                assert len(owners) == 1, f"{module.__name__}.{name}: options of which loss? {overlap}"
                found.append((owners[0], module.__name__, name, defaults))
    return found


def test_bound_functions_are_found():
    names = {(module, name) for _, module, name, _ in bound_functions()}
    assert {("caffe_mining._core", n) for n in ("mining_contrastive_loss", "hardnet_loss", "hardnet_options_problem",
                                                 "contrastive_options_problem")} <= names


@pytest.mark.parametrize("spec, module, name, defaults",
                         [pytest.param(*found, id=f"{found[1]}.{found[2]}") for found in bound_functions()])
def test_bindings_defaults_are_the_options_defaults(spec, module, name, defaults):
    expected = option_defaults(spec)
    compared = {key: value for key, value in defaults.items() if key in expected}
    assert compared == {key: expected[key] for key in compared}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type_name)
@pytest.mark.parametrize("kind", ["reference_fn", "core_fn"])
def test_function_defaults_are_the_options_defaults(spec, kind):
    expected = option_defaults(spec)
    parameters = inspect.signature(getattr(spec, kind)).parameters
    compared = {key: p.default for key, p in parameters.items() if key in expected}
    assert set(compared) == set(spec.options_class().loss_kwargs())
    assert compared == {key: expected[key] for key in compared}


def test_a_changed_bound_default_is_caught():
    """The signature parser reads what pybind11 writes, so a literal changed in bindings/<loss>.cpp is seen."""
    planted = _core.hardnet_options_problem.__doc__.replace("= 0.008", "= 0.009")
    fake = type("Bound", (), {"__doc__": planted})()
    assert bound_defaults(fake)["duplicate_threshold"] == 0.009
    assert bound_defaults(_core.hardnet_options_problem)["batch_reduce"] == "MIN"
