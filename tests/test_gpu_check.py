"""tools/gpu_check.py, the one-run measurement of every GPU route, in its dry mode on the CPU:
every step's command must still run, so the script a short GPU loan depends on cannot rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import run_cli

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.py"


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_in_dry_mode(tmp_path: Path, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    # the same command lines, started by the tests' fork server instead of fresh interpreters
    monkeypatch.setattr(gpu_check, "execute", lambda command, cwd: run_cli(command, cwd=cwd))
    out = tmp_path / "gpu_check.json"

    gpu_check.main(["--dry", "--work", str(tmp_path / "work"), "--out", str(out)])

    results = json.loads(out.read_text())
    steps = {name: entry for name, entry in results.items() if isinstance(entry, dict)}
    failed = {name: e.get("log_tail") for name, e in steps.items() if e.get("returncode")}
    assert not failed
    expected = {"synthetic", "cache", "bench"} | {f"train {r}" for r in gpu_check.ROUTES}
    assert expected <= set(steps)
    assert all(steps[f"train {r}"]["train_images_per_s"] > 0 for r in gpu_check.ROUTES)
    sections = {row["section"] for row in steps["bench"]["rows"]}
    assert {"export", "dcgan"} <= sections
    assert results["data"]["images"] == sum(gpu_check.DRY["linked"])
