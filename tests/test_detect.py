"""Face detector kinds behind one interface: Haar (built in) and MTCNN (the mtcnn extra)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from skimage import data

from conftest import compose, run_cli
from fakeface.deploy.export import export_classifier
from fakeface.errors import ConfigError, DetectorError
from fakeface.faces.detect import FaceDetector, MTCNNDetector, build_detector
from fakeface.models.nets import SeedCNN

CONF = Path(__file__).resolve().parents[1] / "conf"
HAS_MTCNN = importlib.util.find_spec("facenet_pytorch") is not None
needs_mtcnn = pytest.mark.skipif(
    not HAS_MTCNN, reason='facenet-pytorch not installed: pip install -e ".[mtcnn]"'
)
FACENET_MODULES = (
    "facenet_pytorch",
    "facenet_pytorch.models",
    "facenet_pytorch.models.mtcnn",
    "facenet_pytorch.models.utils",
    "facenet_pytorch.models.utils.detect_face",
)


@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[..., ::-1])  # a real face photo, 512x512


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    from fakeface.evaluation.detection import box_iou

    return float(box_iou(a, b)[0, 0])


def test_build_detector_picks_the_kind_from_the_preset() -> None:
    for name in ("default", "original"):
        preset = OmegaConf.to_container(OmegaConf.load(CONF / "detector" / f"{name}.yaml"))
        assert preset["kind"] == "haar"
        assert isinstance(build_detector(preset, "cuda"), FaceDetector)  # Haar ignores device
        FaceDetector(**preset)  # the keys still pass as they are
    assert isinstance(build_detector(None), FaceDetector)
    with pytest.raises(ConfigError, match="detector.kind='dnn'"):
        build_detector({"kind": "dnn"})
    cfg = compose("realtime", ["detector=mtcnn", "classifier=x.ts"])
    assert cfg.detector.kind == "mtcnn" and cfg.detector.device is None


def test_missing_mtcnn_extra_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FACENET_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with pytest.raises(DetectorError) as err:
        build_detector({"kind": "mtcnn"})
    message = str(err.value)
    assert "\n" not in message
    assert "detector=mtcnn needs the mtcnn extra" in message
    assert 'pip install -e ".[mtcnn]"' in message


@pytest.mark.slow
def test_missing_mtcnn_extra_through_the_cli(tmp_path: Path) -> None:
    """python -m fakeface.realtime detector=mtcnn without facenet-pytorch: one line, exit 1."""
    model = export_classifier(SeedCNN(image_size=64).eval(), tmp_path / "c.ts", 64)
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    command = [
        sys.executable, "-m", "fakeface.realtime", f"classifier={model}", "detector=mtcnn",
        "display=false", f"source={tmp_path / 'frames'}", f"paths.root_dir={tmp_path}",
    ]  # fmt: skip
    result = run_cli(command, cwd=tmp_path, missing=FACENET_MODULES)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert 'pip install -e ".[mtcnn]"' in result.stderr


@needs_mtcnn
def test_mtcnn_boxes_match_the_haar_format_on_a_real_photo(astronaut_bgr: np.ndarray) -> None:
    haar = FaceDetector()(astronaut_bgr)
    mtcnn = build_detector({"kind": "mtcnn", "min_face_size": 40})
    assert isinstance(mtcnn, MTCNNDetector) and mtcnn.device == torch.device("cpu")
    boxes = mtcnn(astronaut_bgr)
    assert boxes.dtype == np.int32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert len(boxes) == 1 and len(haar) == 1
    x, y, w, h = boxes[0]
    assert w == h and x >= 0 and y >= 0 and x + w <= 512 and y + h <= 512  # square, in the frame
    assert iou(boxes[0], haar[0]) >= 0.5  # the same face, the same framing
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    assert iou(mtcnn(gray)[0], boxes[0]) >= 0.7  # grayscale frames work too
    # tracking: a search near the last box finds the face again, the same format
    near = mtcnn.near(astronaut_bgr, boxes)
    assert near.dtype == np.int32 and near.shape == (1, 4) and iou(near[0], boxes[0]) >= 0.7
    assert len(mtcnn(np.full((240, 320, 3), 128, np.uint8))) == 0  # no face in a flat frame


@needs_mtcnn
def test_mtcnn_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="detector.thresholds"):
        MTCNNDetector(thresholds=[0.6, 0.7])
    with pytest.raises(ConfigError, match="detector.min_face_size"):
        MTCNNDetector(min_face_size=5)
    with pytest.raises(ConfigError, match="detector.factor"):
        MTCNNDetector(factor=1.2)
