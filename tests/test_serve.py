"""fakeface serve: the JSON API's answers, limits and bad input, under concurrent requests."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose

pytest.importorskip("fastapi")
skimage_data = pytest.importorskip("skimage.data")


def tiny_classifier(path: Path, trained_on: dict | None = None) -> Path:
    """An untrained 64-px SeedCNN exported with its contract: the API's plumbing, not its skill."""
    from fakeface.deploy.export import export_classifier
    from fakeface.models.nets import SeedCNN

    torch.manual_seed(0)
    net = SeedCNN(image_size=64).eval()
    return export_classifier(
        net, path, image_size=64, arch="seed_cnn", trained_on=trained_on or {"synthetic": True},
        threshold=0.5, unsure=(0.4, 0.6),
    )  # fmt: skip


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    from fastapi.testclient import TestClient

    from fakeface.serve.app import build_app

    model = tiny_classifier(tmp_path_factory.mktemp("serve") / "classifier.ts")
    cfg = compose("serve", [f"classifier={model}", "max_file_mb=1", "max_request_mb=3"])
    with TestClient(build_app(cfg)) as test_client:
        yield test_client


def post(client, *files: tuple[str, bytes], heatmap: bool = False):
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return client.post(f"/api/predict?heatmap={str(heatmap).lower()}", files=parts)


def test_a_face_photo_gets_a_box_a_score_a_verdict_and_a_heat_map(client) -> None:
    answer = post(client, ("astronaut.jpg", jpeg_bytes(skimage_data.astronaut())), heatmap=True)
    assert answer.status_code == 200
    result = answer.json()["results"][0]
    assert result["file"] == "astronaut.jpg" and result["face_found"]
    face = result["faces"][0]
    x, y, w, h = face["box"]
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 200  # her face, not the flag or the suit
    assert 0 <= face["p_fake"] <= 1
    expected = (
        "unsure" if 0.4 <= face["p_fake"] < 0.6 else "fake" if face["p_fake"] >= 0.5 else "real"
    )
    assert face["verdict"] == expected
    heat = Image.open(io.BytesIO(__import__("base64").b64decode(face["heatmap"].split(",")[1])))
    assert heat.size == (64, 64) and np.asarray(heat).std() > 0  # a map, not a flat image
    model = answer.json()["model"]
    assert model["threshold"] == 0.5 and model["unsure"] == [0.4, 0.6]
    assert "synthetic" in model["caveat"]  # a demo model says so beside every verdict


def test_a_photo_without_a_face_is_reported_not_scored(client) -> None:
    result = post(client, ("coffee.jpg", jpeg_bytes(skimage_data.coffee()))).json()["results"][0]
    assert result["status"] == 200 and result["face_found"] is False and result["faces"] == []


def test_bad_files_get_a_4xx_naming_them_while_the_good_ones_are_scored(client) -> None:
    photo = jpeg_bytes(skimage_data.astronaut())
    png = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).save(png, "PNG")
    answer = post(
        client,
        ("notes.jpg", b"this is text, not a JPEG"),  # mislabelled: the bytes decide
        ("empty.png", b""),
        ("cut.jpg", photo[: len(photo) // 2]),
        ("really-a-png.jpg", png.getvalue()),  # mislabelled the other way: still an image
        ("big.jpg", b"\xff" * (2**20 + 10)),  # over max_file_mb=1
        ("astronaut.jpg", photo),
    )
    assert answer.status_code == 200  # at least one file was scored
    by_name = {r["file"]: r for r in answer.json()["results"]}
    assert by_name["notes.jpg"]["status"] == 415 and "notes.jpg" in by_name["notes.jpg"]["error"]
    assert by_name["empty.png"]["status"] == 400 and "empty" in by_name["empty.png"]["error"]
    assert by_name["cut.jpg"]["status"] == 400 and "truncated" in by_name["cut.jpg"]["error"]
    assert by_name["big.jpg"]["status"] == 413 and "max_file_mb" in by_name["big.jpg"]["error"]
    assert by_name["really-a-png.jpg"]["face_found"] and by_name["astronaut.jpg"]["face_found"]


def test_a_request_of_only_bad_files_answers_with_their_error(client) -> None:
    answer = post(client, ("notes.txt", b"hello"))
    assert answer.status_code == 415 and "notes.txt" in answer.json()["results"][0]["error"]
    assert client.post("/api/predict").status_code in (400, 422)  # no files at all


def test_a_decompression_bomb_is_refused_before_decoding(client) -> None:
    # 10,000 x 10,000 pixels of one colour: a PNG of a few hundred kB, 300 MB once decoded.
    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buf, "PNG")
    assert len(buf.getvalue()) < 2**20
    result = post(client, ("bomb.png", buf.getvalue())).json()["results"][0]
    assert (
        result["status"] == 413
        and "bomb.png" in result["error"]
        and "megapixels" in result["error"]
    )
    # past Pillow's own limit (200 MP) the header alone is refused too, still with a 413
    huge = io.BytesIO()
    Image.new("1", (20_000, 12_000)).save(huge, "PNG")
    result = post(client, ("huge.png", huge.getvalue())).json()["results"][0]
    assert result["status"] == 413 and "huge.png" in result["error"]


def test_a_request_over_the_request_limit_is_refused_with_413(client) -> None:
    parts = [(f"part{i}.jpg", b"\xff" * (2**20 - 100)) for i in range(4)]  # 4 MB > max 3 MB
    answer = post(client, *parts)
    assert answer.status_code == 413 and "max_request_mb" in answer.json()["detail"]
    assert post(client, ("astronaut.jpg", jpeg_bytes(skimage_data.astronaut()))).status_code == 200


def test_twenty_concurrent_requests_each_get_their_own_answer(client) -> None:
    photo = skimage_data.astronaut()
    mirrored = np.ascontiguousarray(photo[:, ::-1])
    bodies = [jpeg_bytes(mirrored if i % 2 else photo) for i in range(20)]

    def ask(i: int) -> tuple[int, dict]:
        if i % 5 == 4:
            return i, post(client, (f"bad{i}.jpg", b"not an image")).json()
        return i, post(client, (f"photo{i}.jpg", bodies[i])).json()

    with ThreadPoolExecutor(20) as pool:
        answers = dict(pool.map(ask, range(20)))
    for i, answer in answers.items():
        result = answer["results"][0]
        if i % 5 == 4:
            assert result["file"] == f"bad{i}.jpg" and result["status"] == 415
        else:
            assert result["file"] == f"photo{i}.jpg" and result["face_found"], result
    # the same photo gives the same score, whichever thread scored it
    same = {answers[i]["results"][0]["faces"][0]["p_fake"] for i in (0, 2, 6, 8)}
    assert len(same) == 1


def test_the_page_the_model_and_the_openapi_docs_are_served(client) -> None:
    assert "Drop photos here" in client.get("/").text
    assert client.get("/api/model").json()["trained_on"] == {"synthetic": True}
    schema = client.get("/openapi.json").json()
    assert "/api/predict" in schema["paths"]


def test_serve_binds_localhost_by_default_and_checks_its_limits() -> None:
    from fakeface.errors import ConfigError
    from fakeface.serve.app import build_app

    cfg = compose("serve", [])
    assert cfg.host == "127.0.0.1" and cfg.max_file_mb == 20
    with pytest.raises(ConfigError, match="max_file_mb"):
        build_app(compose("serve", ["max_file_mb=0"]))


def test_model_summary_of_a_file_without_training_data_warns() -> None:
    from fakeface.deploy.modelfile import ClassifierInfo
    from fakeface.serve.app import model_summary

    summary = model_summary(ClassifierInfo(image_size=64))
    assert "does not say what it was trained on" in summary["caveat"]
    assert json.dumps(summary)  # JSON-ready
