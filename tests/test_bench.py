"""python -m fakeface.bench on a tiny folder: every section measures and bench.json records it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from conftest import compose, make_face_folder
from fakeface.bench import SECTIONS, bench


def test_bench_measures_every_section_and_writes_bench_json(tmp_path: Path) -> None:
    root = make_face_folder(tmp_path / "faces", per_class=8, size=128)
    # a photo the Haar detector finds, for the generated real-time video
    face = Image.fromarray(data.astronaut()[20:260, 140:380])  # face-centred, as FFHQ photos
    face.save(root / "train" / "real" / "astronaut.jpg")
    cfg = compose(
        "bench",
        [
            f"data.root={root}",
            "data=faces",  # our own folder (data=synthetic writes its set)
            "data.batch_size=4",
            "data.num_workers=0",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path / 'run'}",
            "bench.warmup=1",
            "bench.steps=2",
            "bench.epoch_batches=4",  # 17 training images: the 5th batch would hold one
            "bench.data_batches=2",
            "bench.repeats=3",
            "bench.predict_batch=4",
            "bench.video_frames=10",
        ],
    )
    result = bench(cfg)
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert saved["results"] == result["results"]
    assert {r["section"] for r in saved["results"]} == set(SECTIONS)
    assert all(r["value"] > 0 for r in saved["results"])
    assert saved["machine"]["cpu_cores"] >= 1 and saved["machine"]["torch"]
    train = [r for r in saved["results"] if r["section"] == "train"]
    assert train[0]["name"] == "CNN 32-true" and "met" in train[0]
    # the real epoch through Trainer.fit (4 batches of 4, 1 warm-up batch; a CPU: no second
    # batch size) and the 100k-image epoch time it implies
    epoch = [r for r in train if "epoch" in r["name"]]
    assert [r["unit"] for r in epoch] == ["img/s", "s"]
    assert "epoch via Trainer.fit, batch 4" in epoch[0]["name"]
    assert epoch[1]["value"] == pytest.approx(1e5 / epoch[0]["value"], rel=0.01)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()  # the callbacks ran
    export = {
        r["name"].split(" (")[0]: r["value"] for r in saved["results"] if r["section"] == "export"
    }
    assert export["one image + mirror, tta=true"] > 0 and "one image, tensor in" in export
    realtime = next(r for r in saved["results"] if r["section"] == "realtime")
    assert "10/10 frames with a face" in realtime["name"]
