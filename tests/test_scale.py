"""The Ray route (`fakeface predict engine=ray`): on a local Ray with 2 CPUs it writes the rows
the plain command writes for the same photos, and resume=true skips what its shards hold."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import run_cli
from fakeface.batch import read_rows, unscored
from fakeface.deploy.export import export_classifier
from fakeface.models.nets import SeedCNN
from fakeface.preprocess import find_images

pytest.importorskip("ray.data", reason='the Ray route needs pip install "fakeface[ray]"')


@pytest.mark.slow
def test_ray_route_matches_the_plain_command(tmp_path: Path) -> None:
    from test_predict import face_photos

    torch.manual_seed(0)
    model = export_classifier(SeedCNN(image_size=64).eval(), tmp_path / "c.ts", 64)
    photos = face_photos(tmp_path / "photos", 12)
    (photos / "broken.jpg").write_bytes(b"not a JPEG")
    common = [
        f"classifier={model}", f"input={photos}", "detect=true", "detector=default",
        "precision=fp32", "batch_size=4", "data.num_workers=0",
    ]  # fmt: skip
    python = [sys.executable, "-m", "fakeface.predict"]
    plain = run_cli([*python, *common, f"out={tmp_path / 'plain'}"], cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    ray_command = [*python, *common, "engine=ray", "ray.num_cpus=2", "ray.workers=2"]
    on_ray = run_cli([*ray_command, f"out={tmp_path / 'ray'}"], cwd=tmp_path, timeout=240)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    shards = tmp_path / "ray" / "predictions.parquet"
    one = read_rows(tmp_path / "plain" / "predictions.csv", "csv")
    two = read_rows(shards, "parquet")
    order = ["path", "face"]
    one = one.sort_values(order, ignore_index=True)
    two = two.sort_values(order, ignore_index=True)
    assert len(one) >= 13 and two["error"].str.contains("broken.jpg").sum() == 1
    pd.testing.assert_frame_equal(one, two, atol=1e-6, rtol=0)
    # resume (checked in-process: a second Ray start costs ~15 s): one new photo since; the 13
    # files the shards hold (the unreadable one too: same bytes, same error) are skipped
    (photos / "new.jpg").write_bytes((photos / "000.jpg").read_bytes())
    todo, skipped = unscored(find_images(photos), shards, "parquet", resume=True)
    assert skipped == 13 and [p.name for p in todo] == ["new.jpg"]
