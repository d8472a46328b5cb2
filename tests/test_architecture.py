"""The shape of the package, checked on its source: wings import downward only, no cycles, no private names
imported across modules. Every import counts, a late one inside a function included."""

import ast
from pathlib import Path

import earlyphase

ROOT = Path(earlyphase.__file__).resolve().parent  # studies/_root in a checkout: find the three folders beside it
CHECKOUT = ROOT.parent.parent
FOLDERS = {"earlyphase.imp": CHECKOUT / "imp", "earlyphase.pretext": CHECKOUT / "pretext",
           "earlyphase.studies": CHECKOUT / "studies"}
# what a wing may import besides itself, downward only: the engine imports none of the application's; the jobs
# (one module per command, their configs and W&B logging) the engine; the reporting reads run records with the
# jobs' naming policy, identities and record formats; the campaigns (study, sweep, the command table) run jobs
# and reports together; the bench times the engine through the jobs' setup; the CLI dispatches
ALLOWED = {
    "engine": set(),
    "jobs": {"engine"},
    "reporting": {"engine", "jobs"},
    "campaigns": {"engine", "jobs", "reporting"},
    "bench": {"engine", "jobs"},
    "cli": {"engine", "jobs", "reporting", "campaigns", "bench"},
}


def allowed(own: str, dep: str) -> bool:
    parts = dep.split(".")
    return parts[2] in ALLOWED[own] or ".".join(parts[2:4]) in ALLOWED[own]


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            if "_root" in path.parts:
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, list[str]]]:
    """(module imported, names imported from it) for every import statement in the file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            found += [(m, []) for m in submodules] or [(target, names)]
    return [(m, n) for m, n in found if m.startswith("earlyphase")]


def graph() -> dict[str, list[tuple[str, list[str]]]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def wing(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["earlyphase", "studies"] or len(parts) < 3:
        return None
    return parts[2]


def test_libraries_never_import_the_application_and_wings_import_downward():
    for name, deps in graph().items():
        for dep, _ in deps:
            if name.startswith(("earlyphase.imp", "earlyphase.pretext")):
                assert not dep.startswith("earlyphase.studies"), (name, dep)
            own, other = wing(name), wing(dep)
            if own in ALLOWED and other not in (None, own):
                assert allowed(own, dep), f"{name} imports {dep}: {own} may import only {ALLOWED[own] or 'nothing'}"


def test_no_two_wings_import_each_other():
    """Downward only: for any two wings, at most one imports the other (the rule above, checked as a relation)."""
    pairs = {(wing(name), wing(dep)) for name, deps in graph().items() for dep, _ in deps
             if wing(name) and wing(dep) and wing(name) != wing(dep)}
    assert not {(a, b) for a, b in pairs if (b, a) in pairs}
    assert all(b in ALLOWED[a] for a, b in pairs if a in ALLOWED)


def test_no_import_cycles():
    edges = {name: {dep for dep, _ in deps if dep in modules()} for name, deps in graph().items()}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_no_private_name_is_imported_across_modules():
    crossing = [(name, dep, n) for name, deps in graph().items() for dep, names in deps for n in names
                if n.startswith("_") and dep != name]
    assert crossing == []


def test_the_walk_sees_the_package():
    g = graph()
    assert "earlyphase.studies.engine.trainer" in g and "earlyphase.studies.jobs.imp" in g
    assert ("earlyphase.studies.engine.trainer", ["train"]) in g["earlyphase.studies.engine.schedule"] or any(
        dep == "earlyphase.studies.engine.trainer" for dep, _ in g["earlyphase.studies.engine.schedule"])


def test_the_libraries_and_the_engine_type_check(tmp_path):
    """imp/, pretext/ and studies/engine/ are clean under mypy (pyproject's [tool.mypy]), as lightly runs a strict
    checker in its CI. The three folders are one package only once installed, so the check runs on a tree of links
    laid out as the package."""
    import subprocess
    import sys

    package = tmp_path / "earlyphase"
    package.mkdir()
    (package / "__init__.py").write_text((ROOT / "__init__.py").read_text())
    for name, folder in FOLDERS.items():
        (package / name.split(".")[1]).symlink_to(folder, target_is_directory=True)
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(CHECKOUT / "pyproject.toml"),
                           "--cache-dir", str(tmp_path / ".mypy_cache"), "-p", "earlyphase.imp", "-p",
                           "earlyphase.pretext", "-p", "earlyphase.studies.engine"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
    assert "no issues found" in done.stdout
