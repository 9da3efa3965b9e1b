"""The package layout shows the pipeline: stage folders, one name per thing, no import circle,
no stage importing a later one, and the Hydra config read only at the job's edge."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "transfer_lab"
# data flows one way: shared helpers < data < training < study < analysis
STAGES = {"data": 1, "training": 2, "study": 3, "analysis": 4}
SHARED = {"transfer_lab.errors", "transfer_lab.atomic_files"}
ENTRY_POINTS = {"transfer_lab.prepare"}  # `python -m transfer_lab.prepare`: above every stage
# where a Hydra config may be read: the job's edge, the command-line and config checks, and the
# analysis's own edge (analyze.py's actions)
READS_CONFIG = {"transfer_lab.study.job", "transfer_lab.study.job_settings", "transfer_lab.study.validate",
                "transfer_lab.study.launch_checks", "transfer_lab.prepare", "transfer_lab.analysis.actions",
                "transfer_lab.analysis.settings"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """transfer_lab modules `path` imports anywhere (module level or inside functions)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, set(modules)) for name, path in modules.items()}


def _stage(module: str) -> int:
    if module in SHARED or module == "transfer_lab":
        return 0
    if module in ENTRY_POINTS:
        return 99
    parts = module.split(".")
    return STAGES.get(parts[1], -1) if len(parts) > 1 else -1


def test_no_import_circle():
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in _graph().items()}  # a package's own __init__
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail[trail.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_every_module_sits_in_a_stage_and_no_stage_imports_a_later_one():
    graph = _graph()
    unplaced = sorted(m for m in graph if _stage(m) < 0)
    assert not unplaced, f"modules outside the stage folders: {unplaced}"
    backwards = sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps if _stage(d) > _stage(m))
    assert not backwards, "a stage imports a later one: " + "; ".join(backwards)


def test_one_name_per_thing_and_few_loose_modules():
    names = Counter(p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    assert not [n for n, c in names.items() if c > 1], f"file names used twice: {[n for n, c in names.items() if c > 1]}"
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 4, f"loose modules at transfer_lab/'s top: {loose}"


def test_the_config_is_read_only_at_the_edges():
    """No module below the job takes a `cfg` parameter or imports omegaconf / a DictConfig."""
    offenders = []
    for name, path in _modules().items():
        if name in READS_CONFIG:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
                offenders += [f"{name}.{node.name}({a.arg})" for a in args
                              if a.arg == "cfg" or (a.annotation is not None and "DictConfig" in ast.unparse(a.annotation))]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                offenders += [f"{name} imports {m}" for m in mods if m.split(".")[0] == "omegaconf"]
    assert not offenders, "the Hydra config reaches below the job: " + "; ".join(sorted(offenders))


# inside analysis/: the table (collect) < pure fits < studies (data) < report (files); the loose modules
# at analysis/'s top are the table, the settings and the command line's actions
ANALYSIS_LAYERS = {"fit": 1, "studies": 2, "report": 3}
ANALYSIS = PACKAGE / "analysis"
# calls that write files: only report/ (and the actions that hand a study to it) may make them
WRITES = {"write_text", "write_bytes", "to_csv", "savefig", "atomic_write_text", "atomic_write_bytes", "to_json"}


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts[:2] != ["transfer_lab", "analysis"] or len(parts) < 3:
        return 0
    return ANALYSIS_LAYERS.get(parts[2], 0 if len(parts) == 3 else -1)


def test_analysis_layers_fit_before_studies_before_report():
    graph = {m: d for m, d in _graph().items() if m.startswith("transfer_lab.analysis.")}
    layered = [m for m in graph if _layer(m) > 0]
    assert {m.split(".")[2] for m in layered} == set(ANALYSIS_LAYERS), "analysis/ lost one of its layers"
    backwards = sorted(f"{m} imports {d}" for m in layered for d in graph[m]
                       if _layer(d) > _layer(m) or (_layer(d) == 0 and d.rsplit(".", 1)[-1] in ("actions", "settings")))
    assert not backwards, "an analysis layer imports a later one: " + "; ".join(backwards)
    loose = sorted(p.name for p in ANALYSIS.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 8, f"loose modules at analysis/'s top: {loose}"


def test_fits_and_studies_return_data_and_only_report_writes_files():
    offenders = []
    for layer in ("fit", "studies"):
        for path in sorted((ANALYSIS / layer).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES:
                    offenders.append(f"{layer}/{path.name}:{node.lineno} .{node.func.attr}()")
                elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "open" and any(
                        isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax")
                        for a in node.args[1:] + [k.value for k in node.keywords if k.arg == "mode"]):
                    offenders.append(f"{layer}/{path.name}:{node.lineno} open(..., write)")
    assert not offenders, "a fit or a study writes a file (hand its data to report/): " + "; ".join(offenders)
