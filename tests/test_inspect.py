"""Dataset inspection: index.csv, counts, duplicates, unreadable files, sample grid, size histogram."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from rich.console import Console

from conftest import compose, make_face_folder, run_cli
from fakeface.data.inspect import inspect_dataset


def test_inspect_finds_duplicates_unreadable_files_and_modes(tmp_path: Path) -> None:
    root = make_face_folder(tmp_path / "faces", per_class=3)
    leak = root / "test" / "fake" / "leak.jpg"
    shutil.copy(root / "train" / "fake" / "000.jpg", leak)  # the same file in train and test
    conflict = root / "train" / "fake" / "conflict.jpg"
    shutil.copy(root / "train" / "real" / "001.jpg", conflict)  # one picture, two labels
    (root / "valid" / "real" / "text.jpg").write_text("not an image")
    truncated = root / "valid" / "fake" / "truncated.jpg"
    whole = (root / "valid" / "fake" / "000.jpg").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])  # the header is intact, the pixels are not
    Image.new("L", (40, 30), 90).save(root / "test" / "real" / "gray.jpg")

    out = tmp_path / "report"
    overrides = [
        f"data.root={root}",
        f"paths.root_dir={tmp_path}",
        f"out={out}",
        "data.num_workers=0",
    ]
    console = Console(record=True, width=200)
    summary = inspect_dataset(compose("inspect", overrides), console)

    assert summary["images"] == 23
    assert summary["counts"]["train"] == {"fake": 4, "real": 3}
    assert summary["counts"]["test"] == {"fake": 4, "real": 4}
    assert summary["duplicates_across_splits"] == [[str(root / "train/fake/000.jpg"), str(leak)]]
    assert summary["duplicates_across_classes"] == [
        [str(conflict), str(root / "train/real/001.jpg")]
    ]
    unreadable = {row["image_path"]: row["error"] for row in summary["unreadable"]}
    assert set(unreadable) == {str(root / "valid/real/text.jpg"), str(truncated)}
    assert "truncated" in unreadable[str(truncated)]  # found only by decoding the pixels
    assert summary["modes"] == {"RGB": 21, "L": 1}  # the text file has no mode
    assert summary["sizes"]["64x64"] == 21 and summary["sizes"]["40x30"] == 1

    index = pd.read_csv(out / "index.csv")
    assert len(index) == 23 and index["sha1"].notna().sum() == 23
    assert list(index.columns[:4]) == ["image_path", "label", "class_name", "split"]
    text = console.export_text()
    assert "duplicates across splits" in text and "leak.jpg" in text
    with Image.open(out / "samples.png") as grid:
        assert grid.size == (720, 720)  # 3x3 panels of 3 in at 80 dpi
    assert (out / "sizes.png").stat().st_size > 5000


@pytest.mark.slow
def test_inspect_cli_generates_and_reports_the_synthetic_set(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "fakeface.data.inspect",
        "data=synthetic",
        "data.synthetic.n_train=4",
        "data.synthetic.n_valid=2",
        "data.synthetic.n_test=2",
        "data.synthetic.image_size=64",
        f"paths.root_dir={tmp_path}",
        "data.num_workers=0",
    ]
    result = run_cli(command, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = list((tmp_path / "outputs" / "inspect").glob("runs/*/index.csv"))
    assert len(runs) == 1  # outputs/inspect/runs/<timestamp>/, like every command
    assert len(pd.read_csv(runs[0])) == 8
    assert (runs[0].parent / "samples.png").is_file()
    assert "8 images" in result.stdout and "unreadable files" in result.stdout
