"""The layout's rules, checked on the source: which subpackage may import which, no cycles, the library never
imports the command line nor its test helpers, the loss and search stay pure tensor code, no private name crosses
a module boundary, and the stable import paths re-export exactly the documented names."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import gcl_hf

SRC = Path(gcl_hf.__file__).parent

#: Subpackage → the gcl_hf subpackages it may import (at module level or inside functions). Layers, bottom up:
#: errors, losses → data → modeling → hub → benchmarks / retrieval → training → integrations, demo, cli.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "losses": set(),
    "modeling": {"losses", "errors", "data", "top"},
    "data": {"errors"},
    "benchmarks": {"errors", "data"},
    "retrieval": {"errors", "data", "modeling", "benchmarks", "hub"},
    "hub": {"modeling", "losses", "top"},
    "training": {"errors", "losses", "modeling", "data", "retrieval", "hub"},
    "integrations": {"errors", "modeling", "data", "retrieval", "benchmarks", "hub"},
    "demo": {"errors", "losses", "modeling", "data", "retrieval", "benchmarks", "training"},
    "cli": {"errors", "losses", "modeling", "data", "retrieval", "benchmarks", "hub", "training", "integrations",
            "demo", "top"},
    "testing": set(),
}
#: Leaf modules below every layer: they import nothing of gcl_hf, and any subpackage may import them (plumbing
#: written once: atomic file writes).
LEAVES = {"atomic"}
ALLOWED.update({leaf: set() for leaf in LEAVES})
#: Call-time edges up the layers allowed despite the layering: none (`GCLModel.push_to_hub` calls the publisher
#: that the package root wires, so modeling never imports hub).
LAZY_EXCEPTIONS: set[tuple[str, str]] = set()
#: Stable import paths kept at the top level (each re-exports one subpackage module).
SHIMS = {"loss", "configuration_gcl", "modeling_gcl", "training_args", "trainer", "search", "analysis", "metrics"}


def _imports() -> dict[str, list[tuple[str, str, bool]]]:
    """module → [(imported gcl_hf module, its subpackage, imported at module level)]"""
    out: dict[str, list[tuple[str, str, bool]]] = defaultdict(list)
    for path in SRC.rglob("*.py"):
        if "metrics" in path.parts[len(SRC.parts):-1]:
            continue  # evaluate copies the metric scripts alone: they import nothing of ours
        rel = path.relative_to(SRC).with_suffix("")
        module = ".".join(("gcl_hf", *rel.parts)).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gcl_hf":
                names = [f"{node.module}.{a.name}" if node.module == "gcl_hf" else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "gcl_hf"]
            else:
                continue
            for name in names:
                out[module].append((name, _package(name), id(node) in top_level))
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__version__", "__init__"):
        return "top"
    return parts[1].removesuffix(".py")


def test_subpackages_import_only_lower_layers():
    bad = []
    for module, imports in _imports().items():
        package = _package(module)
        if package in ("top", *SHIMS):
            continue
        for name, target, at_top in imports:
            if target == package or target in ALLOWED[package] or target in LEAVES:
                continue
            if not at_top and (package, target) in LAZY_EXCEPTIONS:
                continue
            bad.append(f"{module} imports {name}{'' if at_top else ' (inside a function)'}")
    assert not bad, "layering broken:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every cycle a depth-first walk of ``graph`` meets, as ``"a -> b -> a"`` (sorted walk: stable messages)."""
    cycles: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_cycle_between_subpackages():
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imports in _imports().items():
        package = _package(module)
        for _, target, _ in imports:
            if package != target and (package, target) not in LAZY_EXCEPTIONS and "top" not in (package, target):
                graph[package].add(target)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_library_never_imports_the_cli():
    users = [m for m, imports in _imports().items() if _package(m) != "cli"
             and any(target == "cli" for _, target, _ in imports)]
    assert not users


def _in_search(name: str) -> bool:
    return name == "gcl_hf.retrieval.search" or name.startswith("gcl_hf.retrieval.search.")


def test_loss_and_search_are_pure_tensor_code():
    imports = _imports()
    search_modules = [m for m in imports if _in_search(m)]
    for module in ("gcl_hf.losses.gcl", "gcl_hf.losses.settings", "gcl_hf.losses.distributed", *search_modules):
        own = {name for name, target, _ in imports[module] if target not in ("losses",)}
        if module.startswith("gcl_hf.retrieval"):
            own = {name for name, _, _ in imports[module] if not _in_search(name)}
        assert not own, f"{module} imports {sorted(own)}"
    assert {"gcl_hf.retrieval.search", "gcl_hf.retrieval.search.engine", "gcl_hf.retrieval.search.rescore"} <= set(
        search_modules)


def test_stable_import_paths_keep_working():
    import importlib

    for module in SHIMS:
        importlib.import_module(f"gcl_hf.{module}")
    from gcl_hf import hub, metrics, search
    from gcl_hf.benchmarks import load_benchmark
    from gcl_hf.data import load_image_text_pairs
    from gcl_hf.loss import ALL_PAIRS, CLIP_PAIRS, gcl_loss
    from gcl_hf.modeling_gcl import GCLModel
    from gcl_hf.trainer import GCLTrainer
    from gcl_hf.training_args import GCLTrainingArguments

    assert callable(search.exact_topk) and callable(metrics.load) and callable(hub.publish) and callable(hub.load)
    assert gcl_loss is gcl_hf.gcl_loss and GCLModel is gcl_hf.GCLModel and GCLTrainer is gcl_hf.GCLTrainer
    assert GCLTrainingArguments is gcl_hf.GCLTrainingArguments and load_benchmark is gcl_hf.load_benchmark
    assert load_image_text_pairs is gcl_hf.load_image_text_pairs and len(ALL_PAIRS) == 6 and len(CLIP_PAIRS) == 2
    for name in gcl_hf.__all__:
        assert getattr(gcl_hf, name) is not None, name


def test_no_private_name_is_imported_across_modules():
    """A ``_private`` name used by another module belongs to that module's public API, or the caller is misplaced."""
    bad = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gcl_hf"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno}: {', '.join(private)} from {node.module}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_the_library_never_imports_its_test_helpers():
    users = [m for m, imports in _imports().items() if _package(m) != "testing"
             and any(target == "testing" for _, target, _ in imports)]
    assert not users, f"library modules importing gcl_hf.testing: {users}"


#: What each stable-path module re-exports: the names the README and the spec document there, nothing else.
DOCUMENTED = {
    "loss": {"ALL_PAIRS", "CLIP_PAIRS", "gcl_loss"},
    "configuration_gcl": {"GCLConfig"},
    "modeling_gcl": {"GCLModel", "GCLOutput"},
    "training_args": {"GCLTrainingArguments"},
    "trainer": {"GCLTrainer", "NonFiniteGradientError", "NonFiniteLossError"},
    "analysis": {"modality_gap", "plot_modality_embeddings"},
    "metrics": {"METRICS", "load", "module_path"},
    "search": {"exact_topk"},
}


def test_stable_paths_re_export_exactly_the_documented_names():
    import importlib

    for name, documented in DOCUMENTED.items():
        module = importlib.import_module(f"gcl_hf.{name}")
        public = {n for n in vars(module) if not n.startswith("_") and n != "annotations"}
        assert set(module.__all__) == documented and public == documented, (name, sorted(public))


def test_no_cycle_between_modules():
    """Module by module, type-only and function-level imports included (a cycle there is a layering bug too); the
    package root and the stable paths, which only re-export, are left out."""
    modules = set(_imports())
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imports in _imports().items():
        if _package(module) in ("top", *SHIMS):
            continue
        for name, target, _ in imports:
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name != module and name in modules and _package(name) not in ("top", *SHIMS) \
                    and not module.startswith(name + "."):
                graph[module].add(name)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
