"""The package's layers, read from its source with `ast`: no module imports from a layer above its own, and no
import cycle anywhere (lazy imports inside functions count too)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "src" / "hf_embgpt"

# bottom to top; a module may import from its own layer (without a cycle) or from any layer below it
LAYERS = [
    ("the Hub pair", ["configuration_embgpt", "modeling_embgpt"]),
    ("formats, kernels, embeddings", ["formats", "kernels", "embeddings"]),
    ("training", ["training"]),
    ("tools", ["convert", "train", "hub", "inspection", "block_size", "generate"]),
    ("entry points", ["cli", "__main__", "__init__"]),
]


def module_names():
    """Dotted names relative to the package (`formats.common`, `__init__`, `formats` for formats/__init__.py)."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def layer_of(name):
    top = name.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"module {name} is in no layer: add it to LAYERS in {__file__}")


def imports_of(name, path, known):
    """The package modules that `name` imports, resolved from relative and absolute imports."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package and name != "__init__" else name.split(".")[:-1]
    if name == "__init__":
        here = []
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{alias.name}" if prefix else alias.name for alias in node.names] + [prefix]
            targets = [("hf_embgpt." + t) if node.level else t for t in targets]
        else:
            continue
        for target in targets:
            if target != "hf_embgpt" and not target.startswith("hf_embgpt."):
                continue
            dotted = target.removeprefix("hf_embgpt").removeprefix(".") or "__init__"
            while dotted and dotted not in known:  # `from .formats import common` names a module; `.X` a name
                dotted = dotted.rpartition(".")[0]
            found.add(dotted or "__init__")
    found.discard(name)
    return found


def import_graph():
    known = module_names()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer():
    for name in module_names():
        layer_of(name)


def test_no_module_imports_from_a_layer_above():
    upward = [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert not upward, "\n".join(upward)


def test_the_hub_pair_imports_nothing_else_of_the_package():
    graph = import_graph()
    assert graph["configuration_embgpt"] == set()
    assert graph["modeling_embgpt"] == {"configuration_embgpt"}


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert find_cycle(graph) == expected


def test_the_import_reader_sees_lazy_relative_and_upward_imports(tmp_path, monkeypatch):
    """The walker itself: a lazy `from ..hub import x` inside a training function is an upward import."""
    package = tmp_path / "hf_embgpt"
    (package / "training").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "hub.py").write_text("x = 1\n")
    (package / "training" / "__init__.py").write_text("")
    (package / "training" / "recipe.py").write_text("def f():\n    from ..hub import x\n    return x\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", package)
    graph = import_graph()
    assert graph["training.recipe"] == {"hub"}
    with pytest.raises(AssertionError, match=r"training.recipe \(training\) imports hub \(tools\)"):
        test_no_module_imports_from_a_layer_above()
