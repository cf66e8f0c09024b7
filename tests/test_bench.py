"""python -m fakeface.bench on a tiny folder: every section measures and bench.json records it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from conftest import compose, make_face_folder
from fakeface.bench.suite import SECTIONS, bench
from fakeface.errors import ConfigError


def face_folder(tmp_path: Path, size: int) -> Path:
    """make_face_folder plus a photo the Haar detector finds, for the generated videos."""
    root = make_face_folder(tmp_path / "faces", per_class=8, size=size)
    face = Image.fromarray(data.astronaut()[20:260, 140:380])  # face-centred, as FFHQ photos
    face.save(root / "train" / "real" / "astronaut.jpg")
    return root


@pytest.mark.slow
def test_bench_measures_every_section_and_writes_bench_json(tmp_path: Path) -> None:
    root = face_folder(tmp_path, 64)
    cfg = compose(
        "bench",
        [
            f"data.root={root}",
            "data=faces",  # our own folder (data=synthetic writes its set)
            "data.image_size=64",  # every section at a quarter of the pixels: the DCGAN's steps
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
            "sections=[data,train,export,dcgan,realtime]",  # routes: its own test below
        ],
    )
    result = bench(cfg)
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert saved["results"] == result["results"]
    assert {r["section"] for r in saved["results"]} == set(SECTIONS) - {"routes"}
    assert "| realtime | 640x480 video" in (tmp_path / "run" / "bench.md").read_text()
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


@pytest.mark.slow
def test_gpu_epoch_rows_add_the_large_batch_whole_and_split(tmp_path: Path) -> None:
    """On a GPU the real-epoch rows also run loader batches of bench.epoch_gpu_batch_size, as
    one optimizer step each and split into steps of data.batch_size (run here on the CPU)."""
    from fakeface.bench.train import bench_train

    root = make_face_folder(tmp_path / "faces", per_class=8, size=64)
    cfg = compose(
        "bench",
        [
            f"data.root={root}",
            "data=faces",
            "data.image_size=64",
            "data.batch_size=2",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path / 'run'}",
            "bench.warmup=1",
            "bench.steps=1",
            "bench.epoch_gpu_batch_size=4",
        ],
    )
    rows: list[dict] = []
    bench_train(cfg, ["32-true"], rows, device="cuda")
    names = [r["name"] for r in rows if r["unit"] == "img/s" and "epoch" in r["name"]]
    assert names == [
        "CNN 32-true epoch via Trainer.fit, batch 2",
        "CNN 32-true epoch via Trainer.fit, batch 4",
        "CNN 32-true epoch via Trainer.fit, batch 4 in steps of 2",
    ]
    assert all(r["value"] > 0 for r in rows)


def test_detect_recall_arithmetic_on_hand_made_boxes(tmp_path: Path) -> None:
    from fakeface.evaluation.detection import box_iou, match_faces, read_annotations

    assert box_iou([0, 0, 10, 10], [5, 0, 10, 10])[0, 0] == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [20, 20, 5, 5])[0, 0] == 0.0
    truth = np.array([[0, 0, 10, 10, 0], [100, 100, 20, 20, 0], [200, 0, 10, 10, 1]])
    found = np.array(
        [
            [5, 0, 10, 10],  # IoU 1/3 with face 0: a hit at 0.3, false at 0.5
            [100, 100, 20, 20],  # face 1 exactly
            [101, 101, 20, 20],  # face 1 again: one face, one hit, the rest is false
            [200, 0, 10, 10],  # an ignored face: neither hit nor false
            [300, 300, 10, 10],  # nothing there
        ]
    )
    assert match_faces(found, truth, 0.3) == (2, 2, 2)
    assert match_faces(found, truth, 0.5) == (1, 2, 3)
    assert match_faces(np.zeros((0, 4)), truth, 0.3) == (0, 2, 0)
    assert match_faces(found[:1], np.zeros((0, 5)), 0.3) == (0, 0, 1)  # a negative photo
    xml = tmp_path / "faces.xml"
    xml.write_text(
        "<dataset><images><image file='a.jpg'>"
        "<box top='2' left='1' width='30' height='31'/><box top='0' left='0' width='5' "
        "height='5' ignore='1'/></image><image file='b.jpg'></image></images></dataset>"
    )
    boxes = read_annotations(xml)
    assert boxes["a.jpg"].tolist() == [[1, 2, 30, 31, 0], [0, 0, 5, 5, 1]]
    assert boxes["b.jpg"].shape == (0, 5)
    csv = tmp_path / "faces.csv"
    csv.write_text("image,x,y,w,h\na.jpg,1,2,30,31\na.jpg,50,50,20,20\nb.jpg,,,,\n")
    boxes = read_annotations(csv)
    assert boxes["a.jpg"][:, :4].tolist() == [[1, 2, 30, 31], [50, 50, 20, 20]]
    assert boxes["b.jpg"].shape == (0, 5)


def test_box_iou_identity_containment_symmetry_and_empty() -> None:
    from fakeface.evaluation.detection import box_iou

    a = np.array([[0, 0, 10, 10], [0, 0, 20, 20], [30, 30, 0, 5]])
    iou = box_iou(a, a)
    assert iou[0, 0] == iou[1, 1] == 1.0
    assert iou[0, 1] == pytest.approx(100 / 400)  # a box inside another: inner / outer area
    assert np.array_equal(iou, iou.T)
    assert iou[2, 2] == 0.0  # a zero-area box matches nothing, itself included (no 0/0)
    assert box_iou(np.zeros((0, 4)), a).shape == (0, 3)
    assert box_iou([0, 0, 10, 10], [10, 0, 10, 10])[0, 0] == 0.0  # touching edges


def test_match_faces_takes_the_highest_iou_pair_first() -> None:
    from fakeface.evaluation.detection import box_iou, match_faces

    truth = np.array([[0, 0, 10, 10, 0], [4, 0, 10, 10, 0]])
    found = np.array([[1, 0, 10, 10], [0, 0, 10, 10]])
    iou = box_iou(found, truth[:, :4])
    assert iou[1, 0] == 1.0 and iou[0, 0] == pytest.approx(9 / 11)
    assert iou[0, 1] == pytest.approx(7 / 13) and iou[1, 1] == pytest.approx(6 / 14)
    # Highest first: detection 1 takes face 0 (IoU 1), so detection 0 takes face 1 (7/13);
    # detection by detection, 0 would take face 0 and leave 1 with 6/14 < 0.5.
    assert match_faces(found, truth, 0.5) == (2, 2, 0)
    assert match_faces(found, truth, 0.6) == (1, 2, 1)  # 7/13 is below 0.6: one false
    assert match_faces(found[::-1], truth, 0.5) == (2, 2, 0)  # the order of detections: no matter


def test_read_annotations_rejects_bad_files(tmp_path: Path) -> None:
    from fakeface.evaluation.detection import read_annotations

    with pytest.raises(ConfigError, match="no such file"):
        read_annotations(tmp_path / "missing.xml")
    bad = tmp_path / "boxes.csv"
    bad.write_text("image,x,y,w,h\na.jpg,1,2,three,4\n")
    with pytest.raises(ConfigError, match="cannot read it"):
        read_annotations(bad)
    other = tmp_path / "boxes.txt"
    other.write_text("a.jpg 1 2 3 4\n")
    with pytest.raises(ConfigError, match="use a dlib imglab .xml or a .csv"):
        read_annotations(other)


def test_routes_section_says_which_routes_it_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ONNX Runtime and without native bf16, those routes are rows saying why; the
    TorchScript fp32 route is still measured (TorchScript only: quick)."""
    import fakeface.bench.routes as routes
    import fakeface.precision

    monkeypatch.setattr(routes, "onnx_missing", lambda: 'no onnxruntime: pip install -e ".[onnx]"')
    monkeypatch.setattr(fakeface.precision, "bf16_supported", lambda device="cpu": False)
    root = face_folder(tmp_path, 64)
    overrides = ["sections=[routes]", f"data.root={root}", "data=faces", "data.image_size=32"]
    overrides += [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"]
    overrides += ["bench.warmup=1", "bench.repeats=2", "bench.video_frames=4", "routes.batch=4"]
    rows = bench(compose("bench", overrides))["results"]
    skipped = {r["route"]: r["name"] for r in rows if r["unit"] == "skipped"}
    assert skipped == {
        "TorchScript bf16": "TorchScript bf16: skipped (this CPU has no native bf16)",
        "ONNX Runtime fp32": 'ONNX Runtime fp32: skipped (no onnxruntime: pip install -e ".[onnx]")',
        "ONNX int8": 'ONNX int8: skipped (no onnxruntime: pip install -e ".[onnx]")',
    }
    fp32 = {r["metric"]: r["value"] for r in rows if r["route"] == "TorchScript fp32"}
    assert fp32["real time, 3 faces/frame"] > 0 and fp32["one image"] > 0
    assert len(fp32) == 8  # one image, batch, and per clip: FPS, detect, classify per face
    md = (tmp_path / "run" / "bench.md").read_text()
    assert "| ONNX int8 | skipped (no onnxruntime" in md
    assert md.count("| TorchScript fp32 | ") == 1


@pytest.mark.slow  # the ONNX export and int8 calibration: about 25 s on two busy cores
def test_routes_section_side_by_side_on_a_tiny_model(tmp_path: Path) -> None:
    """Every route measured (or a skip row saying why), with the 1- and 3-face clips, in
    bench.json and bench.md."""
    from fakeface.bench.routes import ROUTES, onnx_missing

    root = face_folder(tmp_path, 64)
    cfg = compose(
        "bench",
        [
            "sections=[routes]",
            f"data.root={root}",
            "data=faces",
            "data.image_size=32",
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path / 'run'}",
            "bench.warmup=1",
            "bench.repeats=2",
            "bench.video_frames=6",
            "routes.batch=4",
            "routes.calib_images=4",
        ],
    )
    rows = bench(cfg)["results"]
    assert {r["section"] for r in rows} == {"routes"}
    by_route: dict[str, list[dict]] = {}
    for r in rows:
        by_route.setdefault(r["route"], []).append(r)
    assert list(by_route) == [name for name, _, _ in ROUTES]
    measured = [name for name, group in by_route.items() if group[0]["unit"] != "skipped"]
    assert "TorchScript fp32" in measured
    if not onnx_missing():
        assert {"ONNX Runtime fp32", "ONNX int8"} <= set(measured)
    for name in measured:
        metrics = {r["metric"]: r for r in by_route[name]}
        assert metrics["real time, 1 face/frame"]["value"] > 0
        assert "6 faces in 6 frames" in metrics["real time, 1 face/frame"]["name"]
        assert "18 faces in 6 frames" in metrics["real time, 3 faces/frame"]["name"]
        assert metrics["real time, 3 faces/frame: classify ms/face"]["value"] > 0
        assert all(r["value"] > 0 for r in by_route[name])
    md = (tmp_path / "run" / "bench.md").read_text()
    assert "## Deploy routes" in md and "| TorchScript fp32 | " in md
    with pytest.raises(ConfigError, match="routes.formats"):
        bench(compose("bench", ["sections=[routes]", "routes.formats=[tflite]"]))


def test_detect_section_on_an_annotated_photo(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(data.astronaut()).save(photos / "dlib_astronaut.png")
    (photos / "faces.csv").write_text("image,x,y,w,h\nastronaut.png,180,70,90,90\n")
    cfg = compose(
        "bench",
        [
            "sections=[detect]",
            f"detect.images={photos}",  # detect.boxes=null: the folder's .csv; dlib_ prefix found
            "detect.presets=[default,original]",
            "detect.width=0",
            "detect.repeats=1",
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path / 'run'}",
        ],
    )
    assert "detect" not in compose("bench", []).sections  # not in the default run
    rows = bench(cfg)["results"]
    values = {
        r["name"].split(": ")[-1]: r["value"] for r in rows if r["name"].startswith("default")
    }
    assert values["recall IoU>=0.3"] == 1.0 and values["false positives/image"] == 0.0
    assert values["ms per frame"] > 0
    assert {r["section"] for r in rows} == {"detect"} and len(rows) == 8
    with pytest.raises(ConfigError, match="detect.images"):
        bench(compose("bench", ["sections=[detect]", f"paths.root_dir={tmp_path}"]))


@pytest.mark.slow
def test_serve_and_scale_sections_run_with_their_defaults_on_a_fresh_folder(
    tmp_path: Path,
) -> None:
    """No serve.photo and no data generated yet (a fresh clone): the sections still measure a
    real face, through the page, the API and predict (the Ray rows: tests/test_scale.py)."""
    cfg = compose("bench", [
        "sections=[serve,scale]", f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
        "bench.warmup=1", "serve.requests=2", "scale.photos=4", "scale.requests=2", "scale.ray=false",
    ])  # fmt: skip
    rows = {r["name"]: r for r in bench(cfg)["results"]}
    assert rows["one 640x480 photo, 1 face(s): median"]["value"] > 0
    assert rows["API: one 640x480 photo, median"]["value"] > 0
    assert rows["API latency / page latency"]["value"] > 0
    assert rows["fakeface predict (num_workers=2), CSV"]["unit"] == "photos/s"
