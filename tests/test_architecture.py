"""The package's structure: no import cycle (counting imports inside functions too), thin CLI handlers."""

import ast
from pathlib import Path

import diffmem

PKG = Path(diffmem.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """diffmem modules imported anywhere in ``path`` (module level or inside functions)."""
    mod = _module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("diffmem")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("diffmem"):
                continue
            out.add(target)
            for a in node.names:  # `from . import rundir` imports a module
                if (PKG.parent / (target + "." + a.name).replace(".", "/")).with_suffix(".py").exists():
                    out.add(target + "." + a.name)
    return out


def _graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    mods = {_module_name(f): f for f in files}
    g = {}
    for m, f in mods.items():
        deps = set()
        for t in _imports(f):
            while t and t not in mods:  # `from diffmem.x import name` -> module diffmem.x
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != m and not m.startswith(t + ".") and t != "diffmem":
                deps.add(t)
        g[m] = deps
    return g


def _find_cycle(g):
    color, stack = {}, []

    def visit(u):
        color[u] = 1
        stack.append(u)
        for v in sorted(g.get(u, ())):
            if color.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in color:
                c = visit(v)
                if c:
                    return c
        stack.pop()
        color[u] = 2
        return None

    for u in sorted(g):
        if u not in color:
            c = visit(u)
            if c:
                return c
    return None


def test_no_import_cycle():
    g = _graph()
    assert len(g) > 20
    assert "diffmem.rundir" in g["diffmem.train"]  # the walker sees real edges
    cycle = _find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walker_finds_a_planted_cycle():
    g = _graph()
    g["diffmem.rundir"] = g["diffmem.rundir"] | {"diffmem.train"}
    assert _find_cycle(g) is not None


def test_cli_handlers_are_thin():
    """Each command handler parses, builds a config and calls one library function (~30 lines at most)."""
    long = []
    files = sorted(set(PKG.rglob("*cli.py")) | {PKG / "audit.py"})  # every command group, present and future
    assert {PKG / "cli.py", PKG / "theory" / "cli.py", PKG / "closedform_cli.py", PKG / "toy_cli.py"} <= set(files)
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("cmd_"):
                n = node.end_lineno - node.lineno + 1
                if n > 30:
                    long.append(f"{f.name}:{node.name} ({n} lines)")
    assert not long, long


def test_only_rundir_names_files_inside_a_run():
    """No module other than rundir builds a run's file names (config.json, state.pt, checkpoints, ...)."""
    names = ('"state.pt"', '"metrics.jsonl"', '"schedule.json"', "step_{", '"config.json"', 'train_seconds.txt')
    offenders = []
    for f in PKG.rglob("*.py"):
        if f.name == "rundir.py":
            continue
        text = f.read_text()
        offenders += [f"{f.name}: {n}" for n in names if n in text]
    assert not offenders, offenders
