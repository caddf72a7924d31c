"""The stubs _core.pyi and _core_cuda.pyi describe the compiled modules as built: setup.py's build_ext writes each
beside its module from a head (python/caffe_mining/_core.head.pyi, _core_cuda.head.pyi) and every loss's fragment
(bindings/<loss>.pyi, bindings/<loss>_cuda.pyi). Each bound function must be in its stub with the same parameters,
in the same order and of the same kind (positional, keyword-only), with a default exactly where the binding has one
(the same value where the stub writes a literal; ``...`` stands for the proto's default)."""
import ast
import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "python" / "caffe_mining"
BINDINGS = PACKAGE / "bindings"


def module_or_skip(name):
    try:
        return importlib.import_module(f"caffe_mining.{name}")
    except ImportError as error:
        if name == "_core":
            raise
        pytest.skip(f"caffe_mining.{name} is not built here: {error}")


NO_DEFAULT = object()


def parameters(function: ast.FunctionDef) -> dict:
    """{name: (kind, default)}: kind 'positional' or 'keyword'; default NO_DEFAULT, Ellipsis (``...``) or the
    literal's value."""
    args = function.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    kinds = [("positional", arg, default) for arg, default in zip(positional, defaults)]
    kinds += [("keyword", arg, default) for arg, default in zip(args.kwonlyargs, args.kw_defaults)]
    return {arg.arg: (kind, NO_DEFAULT if default is None else ast.literal_eval(default))
            for kind, arg, default in kinds}


def bound_signature(function) -> dict:
    """The parameters of a pybind11 function, from the signature line it writes first in its docstring."""
    header = function.__doc__.splitlines()[0]
    return parameters(ast.parse(f"def {header}: ...").body[0])


def stub_mismatches(module, stub_text: str) -> list:
    stub = {node.name: node for node in ast.parse(stub_text).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    bound = {name: value for name, value in vars(module).items() if not name.startswith("_")}
    problems = [f"{name}: in the stub, not in the module" for name in sorted(set(stub) - set(bound))]
    problems += [f"{name}: in the module, not in the stub" for name in sorted(set(bound) - set(stub))]
    for name in sorted(set(stub) & set(bound)):
        if isinstance(stub[name], ast.ClassDef):
            members = {node.name for node in stub[name].body if isinstance(node, ast.FunctionDef)}
            public = {m for m in vars(bound[name]) if not m.startswith("_") or m in members}
            if members != public:
                problems.append(f"{name}: members {sorted(members)} in the stub, {sorted(public)} in the module")
            continue
        expected, given = bound_signature(bound[name]), parameters(stub[name])
        if [(n, kind) for n, (kind, _) in expected.items()] != [(n, kind) for n, (kind, _) in given.items()]:
            problems.append(f"{name}: parameters {list(given)} in the stub, {list(expected)} in the module")
            continue
        for parameter, (_, default) in given.items():
            bound_default = expected[parameter][1]
            if (default is NO_DEFAULT) != (bound_default is NO_DEFAULT):
                problems.append(f"{name}({parameter}): a default in only one of the stub and the module")
            elif default not in (NO_DEFAULT, Ellipsis) and default != bound_default:
                problems.append(f"{name}({parameter}): default {default!r} in the stub, {bound_default!r} bound")
    return problems


@pytest.mark.parametrize("name", ["_core", "_core_cuda"])
def test_the_stub_beside_the_module_describes_it(name):
    module = module_or_skip(name)
    stub = pathlib.Path(module.__file__).with_name(f"{name}.pyi")
    assert stub.is_file(), f"{stub} missing: setup.py's build_ext writes it"
    assert stub_mismatches(module, stub.read_text()) == []


@pytest.mark.parametrize("name", ["_core", "_core_cuda"])
def test_the_stub_is_its_head_and_every_fragment(name):
    module = module_or_skip(name)
    text = pathlib.Path(module.__file__).with_name(f"{name}.pyi").read_text()
    assert text.startswith((PACKAGE / f"{name}.head.pyi").read_text())
    fragments = [f for f in sorted(BINDINGS.glob("*.pyi")) if f.name.endswith("_cuda.pyi") == (name == "_core_cuda")]
    assert fragments and all(f.read_text() in text for f in fragments)


def test_every_binding_file_has_its_stub_fragment():
    sources = {path.stem for path in BINDINGS.glob("*.cpp")}
    fragments = {path.stem for path in BINDINGS.glob("*.pyi")}
    assert sources and sources == fragments


def test_a_wrong_stub_is_caught():
    """The comparison finds a renamed keyword, a lost default, a positional keyword and a function too many."""
    from caffe_mining import _core

    text = pathlib.Path(_core.__file__).with_name("_core.pyi").read_text()
    assert stub_mismatches(_core, text) == []
    planted = {
        "renamed": text.replace("    mining_ratio: int = ...,", "    mining_rate: int = ...,", 1),
        "no default": text.replace("    loss_weight: float = 1.0,", "    loss_weight: float,", 1),
        "wrong default": text.replace("    backward: bool = True,", "    backward: bool = False,", 1),
        "positional": text.replace("    *,\n    margin: float = ...,", "    margin: float = ...,\n    *,", 1),
        "extra": text + "def hardnet_gpu_lanes() -> int: ...\n",
    }
    for what, wrong in planted.items():
        assert wrong != text, what
        assert stub_mismatches(_core, wrong), what
