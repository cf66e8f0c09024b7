"""Benchmarks: python -m fakeface.bench [sections=[data,train,export,dcgan,realtime]]

Measures, with warm-up and medians, on the configured data (the synthetic set by default):
the data pipeline (JPEG folder vs decoded cache), CNN training (fp32 vs the fast path, optionally
torch.compile), the exported classifier (one-image latency, batched throughput), DCGAN training
and the real-time pipeline on a generated 640x480 video. Prints a table and writes bench.json
(with the machine's facts) into the run directory.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from fakeface import conf_dir
from fakeface.errors import ConfigError
from fakeface.precision import bf16_supported, resolve_precision

log = logging.getLogger(__name__)
CONF = conf_dir()
SECTIONS = ("data", "train", "export", "dcgan", "realtime")
EXTRA_SECTIONS = ("detect",)  # only when named: face detectors need a folder of annotated photos

# The original Keras pipeline on the 2-core reference machine (same model, 128x128, batch 32),
# and the targets of this project relative to it.
KERAS_TRAIN_IMG_S = 27.0
KERAS_PREDICT_MS = 59.0
TARGETS = {
    "train": ("img/s", 4 * KERAS_TRAIN_IMG_S, ">= 108 img/s (4x Keras)"),
    "latency": ("ms", KERAS_PREDICT_MS / 10, "<= 5.9 ms (Keras / 10)"),
    "realtime": ("FPS", 30.0, ">= 30 FPS"),
}


def machine_facts(device: str) -> dict[str, Any]:
    """What the numbers were measured on (for bench.json and docs/performance.md)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    facts = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "device": device,
        "bf16_native": bf16_supported(device),
        "python": platform.python_version(),
    }
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def median_rate(durations: list[float], items: int) -> float:
    """Items per second from the median duration of one repeat."""
    return items / statistics.median(durations)


def synced_now(module: L.LightningModule) -> float:
    """perf_counter after the module's queued GPU work is done (CUDA runs asynchronously)."""
    if module.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


class StepTimer(Callback):
    """Wall time of each training step (forward, backward, optimizer), data fetching excluded."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self.batch_size = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
        self._start = synced_now(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.durations.append(synced_now(module) - self._start)
        self.batch_size = len(batch[0])


def fit_rate(
    module: L.LightningModule,
    dm: L.LightningDataModule,
    precision: str,
    cfg: DictConfig,
    root: Path,
) -> float:
    """Training img/s: median step time over `steps` batches after `warmup` batches (Lightning);
    the step alone, without data loading, logging or callbacks (see `epoch_rate` for those)."""
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=precision,
        max_epochs=1,
        limit_train_batches=cfg.warmup + cfg.steps,  # batches: the DCGAN steps twice per batch
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=dm)
    if len(timer.durations) <= cfg.warmup:
        raise ConfigError(
            f"bench: the training split has only {len(timer.durations)} batches; lower "
            f"bench.warmup ({cfg.warmup}) and bench.steps ({cfg.steps}) or use more data"
        )
    return median_rate(timer.durations[cfg.warmup :], timer.batch_size)


class EpochTimer(Callback):
    """Images/s of a real training epoch: from the start of batch `warmup` to the end of fit
    (data loading, logging, callbacks and the epoch-end checkpoint included; no validation)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.images, self.seconds = warmup, 0, 0.0
        self._start: float | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == self.warmup:
            self._start = synced_now(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self._start is not None:
            self.images += len(batch[0])

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._start is not None:
            self.seconds = synced_now(module) - self._start

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def epoch_rate(
    module: L.LightningModule,
    dm: L.LightningDataModule,
    precision: str,
    cfg: DictConfig,
    root: Path,
) -> float:
    """Training img/s of one epoch through Trainer.fit with the training callbacks and a
    TensorBoard logger, as `fakeface.train` runs it, validation left out."""
    from lightning.pytorch.loggers import TensorBoardLogger

    timer = EpochTimer(cfg.bench.warmup)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    trainer = L.Trainer(
        accelerator=cfg.bench.accelerator,
        devices=1,
        precision=precision,
        max_epochs=1,
        limit_train_batches=cfg.bench.epoch_batches,  # null: the whole training split
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(root / "epoch", name="tensorboard"),
        log_every_n_steps=10,
        enable_model_summary=False,
        default_root_dir=root / "epoch",
        callbacks=[*callbacks, timer],
    )
    trainer.fit(module, datamodule=dm)
    if not timer.images:
        raise ConfigError(
            f"bench: the training epoch has no batches after bench.warmup={cfg.bench.warmup}; "
            "lower bench.warmup or use more data"
        )
    return timer.rate


def loader_rate(loader: Any, batches: int, warmup: int) -> float:
    """Images/s delivered by a data loader (workers' start-up paid in the warm-up)."""

    def endless() -> Any:
        while True:
            yield from loader

    stream = endless()
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    count = sum(len(next(stream)[0]) for _ in range(batches))
    return count / (time.perf_counter() - start)


def datamodule(cfg: DictConfig, **overrides: Any) -> L.LightningDataModule:
    dm = instantiate(cfg.data, _convert_="all", **overrides)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def bench_data(cfg: DictConfig, rows: list[dict]) -> None:
    b = cfg.bench
    jpeg = datamodule(cfg, cache=False, device_resident=False)
    rate = loader_rate(jpeg.train_dataloader(), b.data_batches, b.warmup)
    rows.append(row("data", f"JPEG folder, {cfg.data.num_workers} workers", rate, "img/s"))
    start = time.perf_counter()
    cached = datamodule(cfg, cache=True, device_resident=False)
    rows.append(
        row("data", "decoded cache: build or reuse (all splits)", time.perf_counter() - start, "s")
    )
    rate = loader_rate(cached.train_dataloader(), b.data_batches, b.warmup)
    rows.append(row("data", f"decoded cache, {cfg.data.num_workers} workers", rate, "img/s"))


def resident(cfg: DictConfig, **overrides: Any) -> L.LightningDataModule:
    """The configured data, decoded once and batched on the training device: model time only."""
    dm = instantiate(cfg.data, _convert_="all", device_resident=True, **overrides)
    dm.prepare_data()
    return dm


def classifier(cfg: DictConfig, **overrides: Any) -> L.LightningModule:
    if cfg.model.get("compile"):
        # One compiled model and one set of CUDA graphs at a time, as in a training run: on the
        # H200 (torch 2.11), the third compiled fit in one process failed while capturing.
        torch._dynamo.reset()
    # no validation here, so no schedule: ReduceLROnPlateau would wait for a val/loss
    return instantiate(cfg.model, _convert_="all", scheduler="none", **overrides)


def bench_train(cfg: DictConfig, precisions: list[str], rows: list[dict], device: str) -> None:
    dm = resident(cfg)
    for precision in precisions:
        model = classifier(cfg)
        rate = fit_rate(model, dm, precision, cfg.bench, Path(cfg.paths.output_dir))
        rows.append(row("train", f"CNN {precision}", rate, "img/s", target="train"))
    # The honest figure: a whole epoch through Trainer.fit, as configured (loader batch, optimizer
    # step size, model.compile) and, on a GPU, with loader batches of bench.epoch_gpu_batch_size:
    # one optimizer step each, and split into steps of data.batch_size (model.step_batch_size).
    batch, step = cfg.data.batch_size, cfg.model.get("step_batch_size")
    runs = [(batch, step)]
    big = cfg.bench.epoch_gpu_batch_size
    if device == "cuda" and big and big != batch:
        runs += [(big, None)] + ([(big, batch)] if big % batch == 0 else [])
    compiled = f", compile={cfg.model.compile}" if cfg.model.get("compile") else ""
    for size, step in runs:
        data = dm if size == batch else resident(cfg, batch_size=size)
        model = classifier(cfg, step_batch_size=step)
        rate = epoch_rate(model, data, precisions[-1], cfg, Path(cfg.paths.output_dir))
        steps = f" in steps of {step}" if step else ""
        name = f"CNN {precisions[-1]} epoch via Trainer.fit, batch {size}{steps}{compiled}"
        rows.append(row("train", name, rate, "img/s"))
        rows.append(row("train", f"  -> a 100k-image epoch, batch {size}{steps}", 1e5 / rate, "s"))
    if cfg.bench.compile:
        model = classifier(cfg)
        model.net = torch.compile(model.net)
        rate = fit_rate(model, dm, precisions[-1], cfg.bench, Path(cfg.paths.output_dir))
        rows.append(
            row("train", f"CNN {precisions[-1]} + torch.compile", rate, "img/s", target="train")
        )


def bench_dcgan(cfg: DictConfig, precisions: list[str], rows: list[dict]) -> None:
    """The original recipe (model/dcgan.yaml) and the one docs/dcgan.md recommends for real
    photos (experiment/dcgan_faces.yaml's model keys: DCGAN-paper D, DiffAugment, G EMA, BN in G),
    each at the bench's batch size."""
    dm = resident(cfg)  # both classes: the same work per image as the real-faces-only run
    original = OmegaConf.load(CONF / "model" / "dcgan.yaml")
    faces = OmegaConf.load(CONF / "experiment" / "dcgan_faces.yaml").model
    recipes = {"DCGAN": original, "DCGAN dcgan_faces": OmegaConf.merge(original, faces)}
    for precision in precisions:
        for name, model_cfg in recipes.items():
            gan = instantiate(model_cfg, image_size=cfg.data.image_size)
            gan.on_train_epoch_end = lambda: None  # no sample PNGs: only the steps are timed
            rate = fit_rate(gan, dm, precision, cfg.bench, Path(cfg.paths.output_dir))
            rows.append(row("dcgan", f"{name} {precision} (D and G step)", rate, "img/s"))


def timed(fn: Callable[[], Any], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - start)
    return durations


def export_untrained(cfg: DictConfig, folder: Path) -> Path:
    """The configured CNN with fresh weights, exported: speed does not depend on the weights."""
    from fakeface.deploy.export import export_classifier

    model = instantiate(cfg.model, _convert_="all").eval()
    return export_classifier(model, folder / "classifier.ts", source="bench (untrained weights)")


def bench_export(cfg: DictConfig, device: str, model_file: Path, rows: list[dict]) -> None:
    from fakeface.deploy.inference import score_files
    from fakeface.deploy.modelfile import classify, fast_dtype, load_classifier
    from fakeface.precision import bf16_supported
    from fakeface.preprocess import preprocess_file

    b = cfg.bench
    model, info = load_classifier(model_file, device)
    size = info.image_size
    image = next(Path(cfg.data.root).rglob("*.jpg"))
    one, batch = torch.rand(1, 3, size, size), torch.rand(b.predict_batch, 3, size, size)
    # Both where bf16 is native, the default (fast_dtype) last.
    dtypes = {"fp32": None} | ({"bf16": torch.bfloat16} if bf16_supported(device) else {})
    dtypes = dict(sorted(dtypes.items(), key=lambda item: item[1] == fast_dtype(device)))
    for name, dtype in dtypes.items():
        ms = (
            statistics.median(timed(lambda d=dtype: classify(model, one, d), b.repeats, b.warmup))
            * 1e3
        )
        rows.append(row("export", f"one image, tensor in ({name})", ms, "ms", target="latency"))
    name, dtype = list(dtypes.items())[-1]  # the default precision=auto picks
    # predict/evaluate tta=true: the image and its mirror, averaged
    ms = (
        statistics.median(timed(lambda: classify(model, one, dtype, True), b.repeats, b.warmup))
        * 1e3
    )
    rows.append(row("export", f"one image + mirror, tta=true ({name})", ms, "ms"))
    for name, dtype in dtypes.items():

        def from_file(d: torch.dtype | None = dtype) -> None:
            classify(model, preprocess_file(image, size).unsqueeze(0), d)

        ms = statistics.median(timed(from_file, b.repeats, b.warmup)) * 1e3
        rows.append(row("export", f"one image, JPEG file in ({name})", ms, "ms", target="latency"))
    for name, dtype in dtypes.items():
        durations = timed(lambda d=dtype: classify(model, batch, d), max(3, b.repeats // 10), 2)
        rate = median_rate(durations, len(batch))
        rows.append(row("export", f"batch {len(batch)} ({name})", rate, "img/s"))
    # What predict and evaluate do: decode JPEG files, resize, batch, classify (score_files).
    files = sorted(Path(cfg.data.root).rglob("*.jpg"))[: 4 * b.predict_batch]
    start = time.perf_counter()
    score_files(model, info, files, batch_size=b.predict_batch, dtype=dtype)
    rate = len(files) / (time.perf_counter() - start)
    rows.append(row("export", f"{len(files)} JPEG files, score_files ({name})", rate, "img/s"))


def face_video(cfg: DictConfig, path: Path, frames: int) -> Path:
    """640x480 clip: a face from the data (one the Haar detector finds) gliding over a backdrop."""
    import cv2

    from fakeface.faces.detect import FaceDetector

    detector = FaceDetector(**OmegaConf.load(CONF / "detector" / "default.yaml"))
    backdrop = np.full((480, 640, 3), 96, np.uint8)
    backdrop[:, :, 0] = np.linspace(60, 160, 640, dtype=np.uint8)  # not a flat frame
    face = None
    for candidate in sorted(Path(cfg.data.root).rglob("real/*.jpg"))[:200]:
        image = cv2.resize(cv2.imread(str(candidate)), (200, 200))
        frame = backdrop.copy()
        frame[140:340, 220:420] = image
        if len(detector(frame)):
            face = image
            break
    if face is None:
        raise ConfigError(
            f"bench: the face detector finds no face among {cfg.data.root}/**/real/*.jpg"
        )
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for i in range(frames):
        frame = backdrop.copy()
        x = 40 + int(200 * (1 + np.sin(i / 15)))  # 40..440
        frame[140:340, x : x + 200] = face
        writer.write(frame)
    writer.release()
    return path


def bench_realtime(
    cfg: DictConfig, device: str, model_file: Path, folder: Path, rows: list[dict]
) -> None:
    import cv2

    from fakeface.deploy.modelfile import fast_dtype, load_classifier
    from fakeface.faces.detect import FaceDetector
    from fakeface.realtime.stream import FrameSource, run

    b = cfg.bench
    rt = OmegaConf.load(CONF / "realtime.yaml")
    video = face_video(cfg, folder / "clip.mp4", b.video_frames)
    threads = torch.get_num_threads()
    if rt.threads:  # the real-time module's default thread setting, as users run it
        torch.set_num_threads(rt.threads)
        cv2.setNumThreads(rt.threads)
    try:
        model, info = load_classifier(model_file, device)
        summary = run(
            model,
            info,
            FrameSource(str(video)),
            FaceDetector(**OmegaConf.load(CONF / "detector" / "default.yaml")),
            faces=rt.faces,
            margin=rt.margin,
            dtype=fast_dtype(device),
            redetect_every=rt.redetect_every,
        )
    finally:
        torch.set_num_threads(threads)
    found = f"{summary.frames_with_faces}/{summary.frames} frames with a face"
    rows.append(
        row(
            "realtime",
            f"640x480 video, threads={rt.threads} ({found})",
            summary.fps,
            "FPS",
            target="realtime",
        )
    )


def read_annotations(path: Path) -> dict[str, np.ndarray]:
    """Face boxes per image name from dlib imglab XML or CSV: name -> N x 5 (x, y, w, h, ignore).

    XML: <image file=...><box top= left= width= height= [ignore='1']/></image> (dlib's imglab).
    CSV: a header `image,x,y,w,h` and one row per face; a row with empty x..h is an image without
    faces. An image listed with no box counts as a negative (every detection is false).
    """
    import csv
    import xml.etree.ElementTree as ET

    if not path.is_file():
        raise ConfigError(f"detect.boxes={path}: no such file (dlib imglab .xml or .csv)")
    found: dict[str, list[list[float]]] = {}
    try:
        if path.suffix.lower() == ".xml":
            for image in ET.parse(path).getroot().iter("image"):
                boxes = found.setdefault(image.attrib["file"], [])
                for box in image.iter("box"):
                    a = box.attrib
                    ignore = float(a.get("ignore", "0") not in ("0", ""))
                    keys = ("left", "top", "width", "height")
                    boxes.append([float(a[k]) for k in keys] + [ignore])
        elif path.suffix.lower() == ".csv":
            with path.open(newline="") as f:
                for line in csv.DictReader(f):
                    boxes = found.setdefault(line["image"], [])
                    if (line.get("w") or "").strip():
                        keys = ("x", "y", "w", "h")
                        boxes.append([float(line[k]) for k in keys] + [0.0])
        else:
            raise ConfigError(f"detect.boxes={path}: use a dlib imglab .xml or a .csv")
    except (ET.ParseError, KeyError, ValueError) as err:
        raise ConfigError(
            f"detect.boxes={path}: cannot read it ({err!r}); XML: dlib imglab, "
            "CSV: header image,x,y,w,h"
        ) from None
    return {name: np.asarray(b, np.float64).reshape(-1, 5) for name, b in found.items()}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N x 4, x y w h) with every box in b (M x 4): N x M."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    bottom = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_faces(found: np.ndarray, truth: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(faces found, faces to find, false detections) in one image at IoU >= threshold.

    Greedy one-to-one matching, highest IoU first. truth: N x 5 (x, y, w, h, ignore); a detection
    on an ignored face is neither a hit nor a false one.
    """
    truth = np.asarray(truth, np.float64).reshape(-1, 5)
    found = np.asarray(found, np.float64).reshape(-1, 4)
    iou = box_iou(found, truth[:, :4])
    used_found, used_truth = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < threshold:
            break
        if i not in used_found and j not in used_truth:
            used_found.add(i)
            used_truth.add(j)
    ignored = truth[:, 4] > 0
    hits = sum(1 for j in used_truth if not ignored[j])
    false = len(found) - len(used_found)
    return hits, int((~ignored).sum()), false


def scene_photos(spec: DictConfig) -> list[tuple[Path, np.ndarray]]:
    """(photo, boxes) pairs from detect.images and detect.boxes (null: the folder's .xml/.csv)."""
    if not spec.images or not Path(spec.images).is_dir():
        raise ConfigError(
            f"detect.images={spec.images}: give a folder of photos, e.g. "
            "python -m fakeface.bench sections=[detect] detect.images=<folder> "
            "detect.boxes=<annotations.xml>"
        )
    folder = Path(spec.images)
    files = spec.boxes if spec.boxes is not None else None
    if files is None:
        files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".xml", ".csv"))
    elif isinstance(files, str):
        files = [files]
    if not files:
        raise ConfigError(f"detect.boxes=null: no .xml or .csv in {folder}; give detect.boxes=...")
    photos = []
    for file in files:
        for name, boxes in read_annotations(Path(file)).items():
            path = folder / name
            if not path.is_file():  # e.g. dlib's faces folder: XML 2008_002470.jpg, file dlib_...
                near = sorted(folder.glob(f"*{Path(name).name}"))
                if len(near) != 1:
                    raise ConfigError(f"detect.boxes={file}: no photo {name} in {folder}")
                path = near[0]
            photos.append((path, boxes))
    return photos


def bench_detect(cfg: DictConfig, rows: list[dict]) -> None:
    """Each detector preset on annotated photos: recall at IoU 0.3/0.5, false faces, ms per frame."""
    import cv2

    from fakeface.errors import DetectorError
    from fakeface.faces.detect import build_detector

    spec = cfg.detect
    photos = []
    for path, boxes in scene_photos(spec):
        frame = cv2.imread(str(path))
        if frame is None:
            raise ConfigError(f"detect.images: cannot decode {path}")
        scale = spec.width / frame.shape[1] if spec.width else 1.0
        if scale != 1.0:
            size = (spec.width, round(frame.shape[0] * scale))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            frame = cv2.resize(frame, size, interpolation=interpolation)
            boxes = boxes * [scale, scale, scale, scale, 1.0]
        photos.append((frame, boxes))
    threads = torch.get_num_threads()
    if spec.threads:
        torch.set_num_threads(spec.threads)
        cv2.setNumThreads(spec.threads)
    table = []
    try:
        for preset in spec.presets:
            file = CONF / "detector" / f"{preset}.yaml"
            if not file.is_file():
                raise ConfigError(f"detect.presets: no conf/detector/{preset}.yaml")
            try:
                detector = build_detector(OmegaConf.to_container(OmegaConf.load(file)), "cpu")
            except DetectorError as err:
                log.warning("detect: preset %s skipped: %s", preset, err)
                continue
            counts = {0.3: [0, 0, 0], 0.5: [0, 0, 0]}
            ms = []
            for frame, truth in photos:
                durations = timed(lambda f=frame, d=detector: d(f), spec.repeats, 1)
                ms.append(statistics.median(durations) * 1e3)
                found = detector(frame)
                for threshold, total in counts.items():
                    for k, v in enumerate(match_faces(found, truth, threshold)):
                        total[k] += v
            faces = counts[0.3][1]
            recall = {t: c[0] / max(faces, 1) for t, c in counts.items()}
            false = counts[0.3][2] / len(photos)
            name = f"{preset} ({len(photos)} photos, {faces} faces, width {spec.width or 'as is'})"
            rows.append(row("detect", f"{name}: recall IoU>=0.3", recall[0.3], "fraction"))
            rows.append(row("detect", f"{name}: recall IoU>=0.5", recall[0.5], "fraction"))
            rows.append(row("detect", f"{name}: false positives/image", false, "per image"))
            rows.append(row("detect", f"{name}: ms per frame", statistics.mean(ms), "ms"))
            table.append((preset, recall[0.3], recall[0.5], false, statistics.mean(ms)))
    finally:
        torch.set_num_threads(threads)
    side = Table(title=f"face detectors, threads={spec.threads or 'default'}")
    for column in ("preset", "recall IoU>=0.3", "recall IoU>=0.5", "false/image", "ms/frame"):
        side.add_column(column, justify="left" if column == "preset" else "right")
    for preset, r3, r5, false, ms_frame in table:
        side.add_row(preset, f"{r3:.2f}", f"{r5:.2f}", f"{false:.2f}", f"{ms_frame:.1f}")
    Console(width=max(Console().width, 110)).print(side)


def row(section: str, name: str, value: float, unit: str, target: str | None = None) -> dict:
    """One measurement; with a target, whether it is met (latency: lower is better)."""
    item: dict[str, Any] = {
        "section": section,
        "name": name,
        "value": round(value, 2),
        "unit": unit,
    }
    if target:
        _, goal, text = TARGETS[target]
        item["target"] = text
        item["met"] = bool(value <= goal) if unit == "ms" else bool(value >= goal)
        if target == "train":
            item["vs_keras"] = round(value / KERAS_TRAIN_IMG_S, 1)
        if target == "latency":
            item["vs_keras"] = round(KERAS_PREDICT_MS / value, 1)
    log.info("%s | %s: %.2f %s", section, name, value, unit)
    return item


def print_table(rows: list[dict], facts: dict[str, Any]) -> None:
    table = Table(
        title=f"fakeface bench: {facts['cpu']}, {facts['cpu_cores']} cores, {facts['device']}"
    )
    for column in ("section", "measurement", "value", "vs Keras", "target"):
        table.add_column(column, justify="right" if column in ("value", "vs Keras") else "left")
    for r in rows:
        met = {True: " [green]met[/]", False: " [red]missed[/]"}.get(r.get("met"), "")
        ratio = f"{r['vs_keras']}x" if "vs_keras" in r else ""
        table.add_row(
            r["section"],
            r["name"],
            f"{r['value']:.2f} {r['unit']}",
            ratio,
            r.get("target", "") + met,
        )
    Console(width=max(Console().width, 110)).print(table)


def bench(cfg: DictConfig) -> dict[str, Any]:
    known = SECTIONS + EXTRA_SECTIONS
    unknown = set(cfg.sections) - set(known)
    if unknown:
        raise ConfigError(
            f"sections={list(cfg.sections)}: unknown {sorted(unknown)}; use any of {list(known)}"
        )
    torch.set_float32_matmul_precision("high")
    device = (
        "cuda"
        if cfg.bench.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        else "cpu"
    )
    fast = resolve_precision("auto", "cuda" if device == "cuda" else "cpu")
    precisions = ["32-true"] + ([fast] if fast != "32-true" else [])
    L.seed_everything(cfg.seed, workers=True)
    facts = machine_facts(device)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "data" in cfg.sections:
            bench_data(cfg, rows)
        if "train" in cfg.sections:
            bench_train(cfg, precisions, rows, device)
        model_file = (
            export_untrained(cfg, folder) if {"export", "realtime"} & set(cfg.sections) else None
        )
        if "export" in cfg.sections:
            bench_export(cfg, device, model_file, rows)
        if "dcgan" in cfg.sections:
            bench_dcgan(cfg, precisions, rows)
        if "realtime" in cfg.sections:
            bench_realtime(cfg, device, model_file, folder, rows)
        if "detect" in cfg.sections:
            bench_detect(cfg, rows)
    result = {"machine": facts, "config": OmegaConf.to_container(cfg.bench), "results": rows}
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print_table(rows, facts)
    log.info("wrote %s", out / "bench.json")
    return result
