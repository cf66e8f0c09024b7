"""The project's shape: configs in conf/ (and inside a wheel), entry points on top, no cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fakeface"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT / "src").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def fakeface_imports(path: Path) -> set[str]:
    """Every fakeface module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fakeface"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("fakeface"))
    return names


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
ENTRY_POINTS = {name for name, path in MODULES.items() if "@hydra_main(" in path.read_text()}


def test_every_config_lives_in_conf() -> None:
    assert not list(PACKAGE.rglob("*.yaml")), "configs belong in the top-level conf/"
    tracked = subprocess.run(
        ["git", "ls-files", "conf"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "conf").rglob("*.yaml"))
    assert tracked == on_disk and len(on_disk) > 20


def test_entry_points_are_the_python_m_commands() -> None:
    assert {
        "fakeface.train", "fakeface.evaluate", "fakeface.export", "fakeface.predict",
        "fakeface.generate", "fakeface.bench.__main__", "fakeface.realtime.__main__",
        "fakeface.data.inspect", "fakeface.data.cache", "fakeface.data.synthetic",
        "fakeface.serve.__main__",
    } == ENTRY_POINTS  # fmt: skip


def test_library_code_imports_no_entry_point_and_no_cli() -> None:
    for name, path in MODULES.items():
        imported = fakeface_imports(path)
        assert not any(m.endswith("__main__") for m in imported), name
        if name not in ENTRY_POINTS:
            assert "fakeface.cli" not in imported, f"{name} is library code: raise fakeface.errors"


def test_no_import_cycle() -> None:
    graph = {name: fakeface_imports(path) & MODULES.keys() for name, path in MODULES.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, "import cycle: " + " -> ".join([*visiting, name])
        if name in done:
            return
        visiting.append(name)
        for other in graph[name] - {"fakeface"}:  # the package __init__ imports nothing
            visit(other)
        visiting.pop()
        done.add(name)

    for name in graph:
        visit(name)


def test_every_route_scores_through_the_detector_or_score_files() -> None:
    # faces in photos: the Python API's Detector (predict, serve, the Ray route); labelled
    # folders under perturbations: score_files. Both crop with face_crops and score with classify.
    for name in ("fakeface.predict", "fakeface.serve.app", "fakeface.scale"):
        assert "Detector(" in MODULES[name].read_text(), name
    for name in ("fakeface.evaluate", "fakeface.bench.export"):
        assert "score_files(" in MODULES[name].read_text(), name
    for name in ("fakeface.detector", "fakeface.deploy.inference"):
        text = MODULES[name].read_text()
        assert "face_crops(" in text and "classify(" in text, name
    loaders = [n for n, p in MODULES.items() if "DataLoader(" in p.read_text()]
    assert "fakeface.predict" not in loaders and "fakeface.evaluate" not in loaders


@pytest.mark.slow  # builds and installs a wheel
def test_a_wheel_carries_the_configs(tmp_path: Path) -> None:
    """pip install . (a wheel, not only -e): python -m fakeface.train composes from any folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "wheel"), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("fakeface-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    code = (
        "import fakeface; from hydra import compose, initialize_config_dir;"
        "initialize_config_dir(config_dir=str(fakeface.conf_dir()), version_base='1.3').__enter__();"
        "cfg = compose('train', ['experiment=cnn']);"
        "print(fakeface.conf_dir()); print(cfg.model._target_, cfg.trainer.max_epochs)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": str(site), "PATH": ""},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split("\n")[:2] == [
        str(site / "fakeface" / "conf"), "fakeface.models.classifier.CNNClassifier 15"
    ]  # fmt: skip


def test_pyproject_lists_every_package() -> None:
    """A package missing from pyproject's list would be left out of a wheel (pip install .)."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert on_disk | {"fakeface.conf"} == listed


MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60  # from the first decorator to the last line, docstring included


def function_lengths(path: Path) -> list[tuple[str, int]]:
    """(name:line, length in lines) for every function and method in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            found.append((f"{node.name}:{node.lineno}", node.end_lineno - start + 1))
    return found


def test_no_file_over_400_lines_and_no_function_over_60() -> None:
    long_files = {
        str(p.relative_to(ROOT)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    long_functions = {
        f"{p.relative_to(ROOT)}:{name}": n
        for p in MODULES.values()
        for name, n in function_lengths(p)
        if n > MAX_FUNCTION_LINES
    }
    assert not long_files, f"files over {MAX_FILE_LINES} lines: {long_files}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_the_length_check_counts_decorators_and_docstrings(tmp_path: Path) -> None:
    source = tmp_path / "f.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(57))
    source.write_text(f'@staticmethod\n@property\ndef f():\n    """Doc."""\n{body}\n')
    assert function_lengths(source) == [("f:3", 61)]
