"""The public Python API: `Detector`, one object from an image to its faces and their verdicts.

    from fakeface import Detector
    det = Detector()                           # the released model, MTCNN, bf16 where the CPU has it
    result = det("photo.jpg")                  # a path, bytes, a PIL image or an HxWx3 uint8 array
    for result in det.predict(paths, batch_size=32):   # lazily, in order; bad items carry .error
        print(result.source, [(f.box, f.p_fake, f.verdict) for f in result.faces])

`fakeface predict`, `fakeface serve` and the Ray route all score through a Detector, so a face
gets the same p_fake everywhere. Faces are found with `fakeface.faces.detect` and cropped with
`fakeface.deploy.inference.face_crops` (the crop `evaluate detect=true` and training with
`data.face_crop` use); the crops are resized by `fakeface.preprocess` and scored by
`fakeface.deploy.modelfile.classify`.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fakeface.deploy.inference import face_crops
from fakeface.deploy.modelfile import (
    classify,
    load_classifier,
    precision_dtype,
    verdict,
)
from fakeface.errors import BadImageError, ConfigError
from fakeface.preprocess import load_image, resize_rgb, to_rgb, to_tensor

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]  # noqa: UP007 (a runtime alias)


class ImageInputError(BadImageError):
    """An input the Detector cannot read as an image; the message names the input."""


@dataclass(frozen=True)
class Face:
    """One face: its box (x, y, width, height in image pixels), p_fake and verdict.

    Without face detection (`Detector(faces=None)`) the one "face" is the whole image.
    """

    box: tuple[int, int, int, int]
    p_fake: float
    verdict: str  # "fake", "real" or "unsure" (the model file's threshold and unsure band)
    # distance from the training photos' faces over the model's threshold for it (above 1:
    # unfamiliar, trust the verdict less); None when the model ships no reference (familiar.py)
    novelty: float | None = None
    note: str = ""  # why a verdict is unsure, or that the photo is unfamiliar; "" otherwise

    @property
    def unfamiliar(self) -> bool | None:
        """True when the face is unlike the photos the model was trained on."""
        return None if self.novelty is None else self.novelty > 1.0


@dataclass(frozen=True)
class Result:
    """What the Detector says about one image."""

    source: str  # the path, or "<bytes 3>", "<PIL image 3>", "<array 3>": the input's position
    faces: tuple[Face, ...] = ()  # largest first
    face_found: bool | None = None  # None: no face search (faces=None) or unreadable
    error: str = ""  # "" or why the input could not be read (predict() only; __call__ raises)
    model: str = ""  # the model's name (fakeface-detector-1, or the file's arch)
    width: int = 0  # the decoded image's size in pixels (0 when unreadable)
    height: int = 0

    @property
    def verdict(self) -> str:
        """One word for the image: the largest face's verdict, "no face" or "error"."""
        if self.error:
            return "error"
        return self.faces[0].verdict if self.faces else "no face"


@dataclass
class Crops:
    """An image decoded and cut into faces: boxes and S x S x 3 uint8 crops, the model's input
    (`Detector.cut`; picklable, so worker processes can make them)."""

    source: str
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)
    face_found: bool | None = None
    width: int = 0
    height: int = 0
    error: str = ""


def to_image(image: ImageInput, source: str) -> Image.Image:
    """Any accepted input -> RGB Pillow image; ImageInputError naming `source` otherwise."""
    if isinstance(image, str | Path):
        try:
            return load_image(image)
        except BadImageError as err:
            raise ImageInputError(str(err)) from None
    if isinstance(image, bytes | bytearray | memoryview):
        try:
            with Image.open(io.BytesIO(bytes(image))) as im:
                im.load()
                return to_rgb(im)
        except UnidentifiedImageError:
            raise ImageInputError(
                f"cannot read image {source}: not an image Pillow can read (JPEG, PNG, WebP, ...)"
            ) from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise ImageInputError(f"cannot read image {source}: {err}") from None
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageInputError(
                f"{source}: expected an HxWx3 uint8 RGB array, got shape {image.shape} "
                f"{image.dtype}"
            )
        return Image.fromarray(image, "RGB")
    raise ImageInputError(
        f"{source}: a {type(image).__name__} is not an image; give a path, bytes, a PIL image "
        "or an HxWx3 uint8 RGB array"
    )


def describe(image: object, position: int) -> str:
    """How a result names its input: the path itself, else the kind and position."""
    if isinstance(image, str | Path):
        return str(image)
    kinds = {bytes: "bytes", bytearray: "bytes", Image.Image: "PIL image", np.ndarray: "array"}
    kind = next((v for k, v in kinds.items() if isinstance(image, k)), type(image).__name__)
    return f"<{kind} {position}>"


def detector_settings(faces: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A face-detector preset's settings: a name of conf/detector/ ("mtcnn", "haar", ...), a
    dict of settings (`fakeface.faces.detect.build_detector`), or None (score whole images)."""
    if faces is None or isinstance(faces, Mapping):
        return None if faces is None else dict(faces)
    from omegaconf import OmegaConf

    from fakeface import conf_dir

    presets = conf_dir() / "detector"
    name = {"haar": "default"}.get(faces, faces)
    file = presets / f"{name}.yaml"
    if not file.is_file():
        known = sorted(["haar", *(p.stem for p in presets.glob("*.yaml"))])
        raise ConfigError(f"faces={faces!r}: no such face detector; use one of {known} or None")
    return OmegaConf.to_container(OmegaConf.load(file))


class Detector:
    """Real or generated? Faces, p_fake and a verdict for each image.

    Safe to share between threads: decoding runs in the caller's thread, face finding and
    scoring are serialised by a lock (one call already spreads over every core through torch's
    threads, and the face detector keeps state that is not thread-safe).

    Args:
        model: an exported classifier file (.ts or .onnx); None: the released model.
        device: "cpu" or "cuda" (ONNX files run on the CPU).
        precision: "auto" (bf16 on a CPU that has it, fp32 on CUDA), "fp32" or "bf16".
        faces: the face detector: "mtcnn" (default), "haar", another preset of conf/detector/,
            a dict of its settings, or None to score each whole image as one face.
        margin: crop margin around each face box, a fraction of its side per edge (0.4: the
            framing the released model was trained on).
        tta: also score the mirrored face and average.
        max_faces: faces scored per image, largest first.
        familiar: the "unfamiliar photo" reference (`fakeface.familiar`): None finds the one
            shipped beside the model file, False turns the signal off, or a .familiar.npz path.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        precision: str = "auto",
        faces: str | Mapping[str, Any] | None = "mtcnn",
        margin: float = 0.4,
        tta: bool = False,
        max_faces: int = 20,
        familiar: str | Path | bool | None = None,
    ) -> None:
        if isinstance(max_faces, bool) or not isinstance(max_faces, int) or max_faces < 1:
            raise ConfigError(f"max_faces={max_faces!r}: must be a whole number >= 1")
        if not 0 <= margin <= 2:
            raise ConfigError(f"margin={margin!r}: use a fraction of the face box, e.g. 0.4")
        self.network, self.info = load_classifier(model, device)
        self.dtype = precision_dtype(precision, device)
        self.face_settings = detector_settings(faces)
        self.device, self.margin, self.tta, self.max_faces = device, margin, tta, max_faces
        self.name = self.info.name or self.info.arch
        self._face_detector: Any = None  # built on first use (MTCNN loads its three networks)
        self.familiarity = _familiarity(model, familiar)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        faces = (self.face_settings or {}).get("kind", "whole image")
        return f"Detector(model={self.name!r}, faces={faces!r}, device={self.device!r})"

    def __call__(self, image: ImageInput) -> Result:
        """Score one image; ImageInputError (naming it) if it cannot be read."""
        crops = self.cut(image, describe(image, 0))
        if crops.error:
            raise ImageInputError(crops.error)
        return self.score([crops])[0]

    def predict(
        self, images: Iterable[ImageInput], batch_size: int = 32, num_workers: int = 0
    ) -> Iterator[Result]:
        """Score many images; yields one Result per input, lazily and in order.

        An unreadable input becomes its Result's `error` and the rest go on. Faces of several
        images share each forward pass (up to `batch_size` images at a time).

        Args:
            images: paths, bytes, PIL images or arrays, any iterable (a generator is read
                lazily, `batch_size` images ahead).
            batch_size: images cut and scored together.
            num_workers: processes that decode and find faces (0: in this thread).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r}: must be a whole number >= 1, e.g. 32")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"num_workers={num_workers!r}: must be a whole number >= 0")
        batch: list[Crops] = []
        for crops in self._cut_all(images, batch_size, num_workers):
            batch.append(crops)
            if len(batch) == batch_size:
                yield from self.score(batch)
                batch = []
        if batch:
            yield from self.score(batch)

    def _cut_all(
        self, images: Iterable[ImageInput], batch_size: int, num_workers: int
    ) -> Iterator[Crops]:
        """Each input decoded and cut, in order; in worker processes when num_workers > 0."""
        numbered = ((image, describe(image, i)) for i, image in enumerate(images))
        if num_workers == 0:
            for image, source in numbered:
                yield self.cut(image, source)
            return
        import multiprocessing

        # fork: the workers inherit the loaded settings; each builds its own face detector.
        # A window of 2 batches in flight keeps a generator lazy and the workers busy.
        with ProcessPoolExecutor(
            num_workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_worker_start,
            initargs=(self,),
        ) as pool:
            pending: list[Future[Crops]] = []
            for image, source in numbered:
                pending.append(pool.submit(_worker_cut, image, source))
                if len(pending) >= 2 * batch_size:
                    yield pending.pop(0).result()
            for future in pending:
                yield future.result()

    def cut(self, image: ImageInput, source: str = "<image>") -> Crops:
        """Decode one input and cut it into S x S face crops (the whole image without faces);
        an unreadable input gets its `error` instead."""
        try:
            picture = to_image(image, source)
        except ImageInputError as err:
            return Crops(source, error=str(err))
        crops = Crops(source, width=picture.width, height=picture.height)
        size = self.info.image_size
        if self.face_settings is None:
            crops.boxes = [(0, 0, picture.width, picture.height)]
            crops.pixels = [resize_rgb(picture, size)]
            return crops
        with self._lock:
            found = face_crops(picture, self.face_detector(), self.margin, limit=self.max_faces)
        crops.face_found = bool(found)
        crops.boxes = [box for box, _ in found]
        crops.pixels = [resize_rgb(crop, size) for _, crop in found]
        return crops

    def face_detector(self) -> Any:
        """The face detector, built on first use (on the classifier's device)."""
        if self._face_detector is None:
            from fakeface.faces.detect import build_detector

            self._face_detector = build_detector(self.face_settings, self.device)
        return self._face_detector

    def p_fake(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """p_fake and novelty (None without a reference) of N x S x S x 3 uint8 face crops."""
        if not len(pixels):
            return np.zeros(0, np.float32), None
        column = self.info.class_names.index("fake")
        with self._lock:
            probs = classify(self.network, to_tensor(pixels), self.dtype, self.tta)
            novelty = self.familiarity(pixels) if self.familiarity is not None else None
        return probs[:, column].numpy(), novelty

    def score(self, batch: list[Crops]) -> list[Result]:
        """Score every face of `batch` (from `cut`) in one forward pass; one Result per image."""
        pixels = [p for crops in batch for p in crops.pixels]
        p_fake, novelty = self.p_fake(np.stack(pixels) if pixels else np.zeros((0, 1, 1, 3)))
        novelty = novelty if novelty is not None else [None] * len(p_fake)
        scored = iter(zip(p_fake, novelty, strict=True))
        results = []
        for crops in batch:
            faces = tuple(
                self._face(box, float(p), None if n is None else float(n))
                for box, (p, n) in zip(crops.boxes, scored, strict=False)
            )
            results.append(
                Result(
                    crops.source,
                    faces,
                    crops.face_found,
                    crops.error,
                    self.name,
                    crops.width,
                    crops.height,
                )  # fmt: skip
            )
        return results

    def _face(self, box: tuple[int, int, int, int], p: float, novelty: float | None) -> Face:
        """One face's verdict, and a note that says why it is unsure or that it is unfamiliar."""
        called = verdict(p, self.info)
        notes = []
        if called == "unsure":
            low, high = self.info.unsure
            notes.append(
                f"p_fake {p:.2f} is between {low:.2f} and {high:.2f}: the model cannot tell"
            )
        if novelty is not None and novelty > 1.0:
            notes.append(
                f"unfamiliar photo: unlike the faces this model was trained on (novelty "
                f"{novelty:.2f} > 1); trust the verdict less"
            )
        return Face(box, p, called, novelty, "; ".join(notes))


def _familiarity(model: str | Path | None, familiar: str | Path | bool | None) -> Any:
    """The novelty scorer for `Detector(familiar=...)`, or None."""
    from fakeface.familiar import Familiarity, FamiliarityScorer, reference_for

    if familiar is False:
        return None
    if familiar is None or familiar is True:
        path = reference_for(model)
        if path is None:
            if familiar is True:
                raise ConfigError(f"familiar=True: no .familiar.npz beside the model {model}")
            return None
    else:
        path = Path(familiar).expanduser()
        if not path.is_file():
            raise ConfigError(f"familiar={familiar}: no such file (a .familiar.npz reference)")
    return FamiliarityScorer(Familiarity.load(path))


_WORKER: Detector | None = None  # a worker process's copy of the Detector


def _worker_start(detector: Detector) -> None:
    global _WORKER
    torch.set_num_threads(1)  # one core per worker: the workers are the parallelism
    detector._lock = threading.Lock()  # a fresh lock: the parent's may have been held at fork
    _WORKER = detector


def _worker_cut(image: ImageInput, source: str) -> Crops:
    assert _WORKER is not None
    return _WORKER.cut(image, source)


__all__ = ["Detector", "Face", "ImageInputError", "Result"]
