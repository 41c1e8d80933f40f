"""The import layout: ``import timm_lc`` binds every public name statically (type checkers see them),
the library never imports the command line, and the settings schema and the command line's
modules load without torch."""
import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("timm_lc", "timm_lc_settings", "timm_lc_cli")
HEAVY = ("torch", "timm", "accelerate", "timm_lc")


def _modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def _bound_names(tree: ast.Module) -> set:
    """Names a module binds at its top level (imports, definitions, assignments)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _all_of(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def _imported_modules(tree: ast.Module, package: str) -> set:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "" if node.level == 0 else package)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_every_all_name_is_bound_statically(package):
    """Each ``__all__`` is a literal naming only what its module binds; no PEP 562 or ``globals()`` exports."""
    for path in _modules(package):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exported = _all_of(tree)
        if exported is not None:
            missing = [name for name in exported if name not in _bound_names(tree)]
            assert not missing, f"{path.relative_to(ROOT)}: __all__ names {missing}, which it does not bind"
        assert "__getattr__" not in _bound_names(tree), f"{path.relative_to(ROOT)}: module-level __getattr__"
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "globals" not in calls, f"{path.relative_to(ROOT)} fills its namespace through globals()"


def test_import_timm_lc_is_eager_and_complete():
    import timm
    import timm_lc
    assert set(timm_lc.__all__) <= set(vars(timm_lc))
    assert {"lc_resnet20_hebb", "lc_resnet_tiny", "lc_converted"} <= set(timm.list_models("lc_*"))
    source = (ROOT / "timm_lc" / "__init__.py").read_text(encoding="utf-8")
    assert "environ" not in source  # no environment variable changes what the package exports


def test_the_library_never_imports_the_command_line():
    """Only the ``__main__`` entry points (``python -m timm_lc.train``) run the command line."""
    for path in _modules("timm_lc"):
        if path.name == "__main__.py":
            continue
        imported = _imported_modules(ast.parse(path.read_text(encoding="utf-8")), "timm_lc")
        assert not any(m.split(".")[0] == "timm_lc_cli" for m in imported), path.relative_to(ROOT)


def test_the_settings_schema_imports_neither_torch_nor_the_library():
    for path in _modules("timm_lc_settings"):
        imported = {m.split(".")[0] for m in _imported_modules(ast.parse(path.read_text(encoding="utf-8")), "")}
        assert not imported & {"torch", "timm", "accelerate", "timm_lc", "timm_lc_cli"}, path.relative_to(ROOT)


def test_command_modules_load_without_torch():
    """Every command's module and parser (its --help) loads without torch, timm, accelerate or timm_lc."""
    code = ("import sys, timm_lc_cli, importlib\n"
            "for module, _ in timm_lc_cli.COMMANDS.values():\n"
            "    assert importlib.import_module(module).build_parser().allow_abbrev is False, module\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _readme_python_blocks() -> list:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return [block for _, block in re.findall(r"^( *)```python\n(.*?)^\1```", readme, re.S | re.M)]


def test_readme_snippets_use_only_public_names():
    """The static check: every ``timm_lc.NAME`` of the README's snippets is in the literal ``__all__``."""
    exported = _all_of(ast.parse((ROOT / "timm_lc" / "__init__.py").read_text(encoding="utf-8")))
    used = {n for block in _readme_python_blocks() for n in re.findall(r"\btimm_lc\.([A-Za-z_]\w*)", block)}
    assert {"SleepPhase", "convert_to_lc_", "share_weights_"} <= used
    assert used <= set(exported), sorted(used - set(exported))


PYRIGHT = shutil.which("pyright") or shutil.which("pyright", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(PYRIGHT is None, reason="pyright is not installed")
def test_pyright_sees_every_public_name(tmp_path):
    """pyright, reading the sources, resolves the README's Quickstart verbatim and every public name of
    ``timm_lc`` (the README's SleepPhase snippet is a fragment: its names are checked one by one)."""
    quickstart = next(b for b in _readme_python_blocks() if "import timm_lc" in b and "convert_to_lc_" in b)
    (tmp_path / "quickstart.py").write_text(quickstart)
    names = sorted(set(_all_of(ast.parse((ROOT / "timm_lc" / "__init__.py").read_text(encoding="utf-8"))))
                   | {n for b in _readme_python_blocks() for n in re.findall(r"\btimm_lc\.([A-Za-z_]\w*)", b)})
    (tmp_path / "names.py").write_text("import timm_lc\n\n" + "".join(f"print(timm_lc.{n})\n" for n in names))
    (tmp_path / "pyrightconfig.json").write_text(json.dumps({"extraPaths": [str(ROOT)]}))
    result = subprocess.run([PYRIGHT, "--outputjson", "--pythonpath", sys.executable, "quickstart.py", "names.py"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    report = json.loads(result.stdout)
    errors = [d["message"] for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert report["summary"]["filesAnalyzed"] == 2 and errors == [], errors


@pytest.mark.parametrize("module, prog", [("timm_lc.train", "timm-lc train"), ("timm_lc.studies.bench", "timm-lc bench"),
                                          ("timm_lc_cli", "timm-lc")])
def test_python_dash_m_entry_points(module, prog):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"usage: {prog}" in result.stdout


def test_model_sleep_is_what_every_registered_model_carries():
    """``MODEL_SLEEP`` (torch-free, read by the training config) is the one definition of the models' sleep."""
    import timm
    import timm_lc  # noqa: F401
    from timm_lc_settings.sleep import MODEL_SLEEP
    names = timm.list_models("lc_resnet*")
    assert set(MODEL_SLEEP) == {n for n in names if n.endswith("_hebb")}
    for name in names:
        expected = MODEL_SLEEP[name].to_dict() if name in MODEL_SLEEP else None
        assert timm.models.get_pretrained_cfg(name).sleep == expected, name
    assert timm.create_model("lc_resnet_tiny_hebb").sleep_cfg == MODEL_SLEEP["lc_resnet_tiny_hebb"].to_dict()
