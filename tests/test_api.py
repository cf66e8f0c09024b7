"""The Python API (fakeface.Detector): inputs, errors, laziness, threads, workers, the examples of
docs/api.md, and one p_fake for a face whichever route scores it (API, predict, evaluate, serve)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fakeface
from fakeface import Detector, ImageInputError
from fakeface.errors import ConfigError, FakefaceError

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # the conftest's model_file


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((256, 256)))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """A face photo, its mirror, a photo with no face, and a file that is not an image."""
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(astronaut).save(folder / "a.jpg", quality=95)
    Image.fromarray(astronaut[:, ::-1]).save(folder / "b.png")
    Image.new("RGB", (120, 90), (120, 140, 160)).save(folder / "c_flat.png")
    (folder / "d_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    return folder


def fp32(model: Path, faces: str | None = "haar", **kwargs: object) -> Detector:
    return Detector(model, precision="fp32", faces=faces, **kwargs)


def test_every_input_kind_gives_the_same_faces(model_file: Path, photos: Path) -> None:
    det = fp32(model_file)
    path = photos / "b.png"  # lossless: the array and the file hold the same pixels
    pixels = np.asarray(Image.open(path).convert("RGB"))
    results = [
        det(path),
        det(str(path)),
        det(path.read_bytes()),
        det(Image.open(path)),
        det(pixels),
    ]
    first = results[0]
    assert first.face_found and len(first.faces) >= 1 and first.model == "SeedCNN"
    assert (first.width, first.height) == (256, 256) and first.source == str(path)
    for other in results[1:]:
        assert [f.box for f in other.faces] == [f.box for f in first.faces]
        np.testing.assert_allclose(
            [f.p_fake for f in other.faces], [f.p_fake for f in first.faces], atol=1e-6
        )
    face = first.faces[0]
    assert 0 <= face.p_fake <= 1 and face.verdict == ("fake" if face.p_fake >= 0.5 else "real")
    assert first.verdict == face.verdict
    assert [r.source for r in results[2:]] == ["<bytes 0>", "<PIL image 0>", "<array 0>"]


def test_bad_input_raises_one_typed_error_naming_it(model_file: Path, photos: Path) -> None:
    det = fp32(model_file)
    cases = [
        (photos / "d_broken.jpg", "d_broken.jpg"),
        (photos / "missing.jpg", "missing.jpg"),
        (b"not an image", "<bytes 0>"),
        (np.zeros((4, 4), np.uint8), "HxWx3 uint8"),
        (np.zeros((4, 4, 3), np.float32), "float32"),
        (42, "int is not an image"),
    ]
    for bad, named in cases:
        with pytest.raises(ImageInputError, match=re.escape(named)) as caught:
            det(bad)
        assert isinstance(caught.value, FakefaceError) and isinstance(caught.value, ValueError)
        assert "Traceback" not in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="faces='nope'"):
        Detector(model_file, faces="nope")
    with pytest.raises(ConfigError, match="max_faces"):
        Detector(model_file, max_faces=0)
    with pytest.raises(ConfigError, match="batch_size"):
        next(det.predict([photos / "a.jpg"], batch_size=0))


def test_predict_is_lazy_in_order_and_keeps_going(model_file: Path, photos: Path) -> None:
    det = fp32(model_file)
    taken = []

    def images():
        for i in range(40):
            taken.append(i)
            yield [photos / "a.jpg", photos / "d_broken.jpg", photos / "c_flat.png"][i % 3]

    results = det.predict(images(), batch_size=4)
    first = next(results)
    assert len(taken) == 4  # one batch read ahead, not the whole generator
    rest = list(results)
    assert len(rest) == 39 and len(taken) == 40
    every = [first, *rest]
    assert [r.source for r in every[:3]] == [
        str(photos / "a.jpg"), str(photos / "d_broken.jpg"), str(photos / "c_flat.png")
    ]  # fmt: skip
    assert [r.verdict for r in every[:3]] == [first.verdict, "error", "no face"]
    assert "d_broken.jpg" in every[1].error and every[1].faces == ()
    assert every[2].face_found is False and every[2].error == ""
    # a face scored in a batch of mixed images gets the p_fake it gets alone
    alone = det(photos / "a.jpg").faces[0].p_fake
    assert {round(r.faces[0].p_fake, 6) for r in every[::3]} == {round(alone, 6)}


def test_whole_images_without_face_search(model_file: Path, photos: Path) -> None:
    from fakeface.deploy.modelfile import classify, load_classifier
    from fakeface.preprocess import preprocess_file

    result = fp32(model_file, faces=None)(photos / "c_flat.png")
    assert result.face_found is None and len(result.faces) == 1
    assert result.faces[0].box == (0, 0, 120, 90)
    model, _ = load_classifier(model_file)
    expected = classify(model, preprocess_file(photos / "c_flat.png", SIZE)[None])[0, 0]
    assert result.faces[0].p_fake == pytest.approx(float(expected), abs=1e-6)


def test_threads_and_workers_agree_with_one_by_one(model_file: Path, photos: Path) -> None:
    det = fp32(model_file)
    inputs = [photos / n for n in ("a.jpg", "b.png", "c_flat.png", "d_broken.jpg")] * 3
    serial = list(det.predict(inputs, batch_size=1))
    threaded: dict[int, fakeface.Result] = {}

    def work(i: int) -> None:
        try:
            threaded[i] = det(inputs[i])
        except ImageInputError as err:
            threaded[i] = fakeface.Result(str(inputs[i]), error=str(err))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    workers = list(det.predict(inputs, batch_size=5, num_workers=2))
    for i, one in enumerate(serial):
        for other in (threaded[i], workers[i]):
            assert other.error == one.error and other.face_found == one.face_found
            assert [f.box for f in other.faces] == [f.box for f in one.faces]
            np.testing.assert_allclose(
                [f.p_fake for f in other.faces], [f.p_fake for f in one.faces], atol=1e-6
            )


def test_one_p_fake_for_a_face_on_every_route(model_file: Path, photos: Path) -> None:
    """The API, predict's rows, evaluate's scoring (detect=true) and the page's JSON API give a
    face the same p_fake (fp32, Haar faces, the default margin)."""
    from fastapi.testclient import TestClient
    from omegaconf import OmegaConf

    from fakeface.batch import predict_table
    from fakeface.deploy.inference import CLEAN, score_files
    from fakeface.deploy.modelfile import load_classifier
    from fakeface.serve.analyse import Analyser, Limits
    from fakeface.serve.app import create_app

    det = fp32(model_file)
    files = [photos / "a.jpg", photos / "b.png"]
    api = [det(f).faces[0].p_fake for f in files]
    table = predict_table(det, files)
    rows = [float(table[(table["path"] == str(f)) & (table["face"] == 0)]["p_fake"].iloc[0])
            for f in files]  # fmt: skip
    model, info = load_classifier(model_file)
    haar = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "detector" / "default.yaml"))
    evaluated = score_files(model, info, files, detector=haar).probs[CLEAN][:, 0].tolist()
    with TestClient(create_app(Analyser(det), Limits())) as client:
        served = []
        for f in files:
            answer = client.post("/api/predict", files={"files": (f.name, f.read_bytes())})
            assert answer.status_code == 200, answer.text
            served.append(answer.json()["results"][0]["faces"][0]["p_fake"])
    for route in (rows, evaluated, served):
        np.testing.assert_allclose(route, api, atol=1e-6)
    assert api[0] != pytest.approx(api[1], abs=1e-4)  # two different faces, not one constant


def test_released_model_and_docs_examples(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/api.md's Python examples run as written, on the released model, in a folder with a
    photo.jpg."""
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "import Detector" in b]
    assert len(blocks) == 2
    (tmp_path / "photo.jpg").write_bytes((photos / "a.jpg").read_bytes())
    (tmp_path / "broken.jpg").write_bytes((photos / "d_broken.jpg").read_bytes())
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        scope: dict = {}
        exec(compile(block, "docs/api.md", "exec"), scope)  # noqa: S102 (our own docs)
    result = scope["det"]("photo.jpg")
    assert result.model == "fakeface-detector-1" and result.face_found
    assert result.faces[0].verdict in ("fake", "real", "unsure")


def test_familiarity_fires_on_what_is_far_from_the_reference(tmp_path: Path) -> None:
    from fakeface.familiar import Familiarity

    rng = np.random.default_rng(0)
    centre = rng.normal(size=64)
    near = centre + 0.3 * rng.normal(size=(600, 64))  # the training kind
    far = -centre + 0.3 * rng.normal(size=(50, 64))  # another kind of photo
    fitted = Familiarity.fit(near[:400], near[400:500], dims=16, k=5, quantile=0.95)
    inside = (fitted.novelty(near[500:]) > 1).mean()
    assert inside <= 0.15 and (fitted.novelty(far) > 1).mean() == 1.0
    again = Familiarity.load(fitted.save(tmp_path / "r.familiar.npz"))
    np.testing.assert_allclose(again.novelty(far), fitted.novelty(far), rtol=1e-2)
    assert again.k == 5 and again.threshold == pytest.approx(fitted.threshold)


def test_detector_carries_novelty_and_says_why_it_is_unsure(
    model_file: Path, photos: Path, tmp_path: Path
) -> None:
    from fakeface.evaluation.kid import KIDFeatures
    from fakeface.familiar import Familiarity

    # a reference of flat grey squares: a face photo is far from it
    flat = np.stack([np.full((SIZE, SIZE, 3), v, np.uint8) for v in range(60, 200, 5)])
    features = KIDFeatures()(flat).float().numpy()
    reference = tmp_path / "c.familiar.npz"
    Familiarity.fit(features[::2], features[1::2], dims=4, k=2).save(reference)
    det = Detector(model_file, faces="haar", precision="fp32", familiar=reference)
    face = det(photos / "a.jpg").faces[0]
    assert face.novelty > 1 and face.unfamiliar and "unfamiliar photo" in face.note
    plain = fp32(model_file)
    assert plain.familiarity is None and plain(photos / "a.jpg").faces[0].novelty is None
    assert face.p_fake == pytest.approx(plain(photos / "a.jpg").faces[0].p_fake, abs=1e-6)
    # a copy of the model with the reference beside it finds it; familiar=True insists
    beside = tmp_path / "c.ts"
    beside.write_bytes(model_file.read_bytes())
    assert Detector(beside, faces="haar").familiarity is not None
    with pytest.raises(ConfigError, match="familiar=True"):
        Detector(model_file, familiar=True)
    # an unsure verdict names the band it fell in
    from dataclasses import replace

    wide = fp32(model_file)
    wide.info = replace(wide.info, unsure=(0.0, 1.0))
    note = wide(photos / "a.jpg").faces[0].note
    assert wide(photos / "a.jpg").faces[0].verdict == "unsure" and "between 0.00 and 1.00" in note
