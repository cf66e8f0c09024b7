"""One classifier, several deployment files: TorchScript, ONNX fp32 and ONNX int8.

    ts    classifier.ts         TorchScript (torch), fp32 weights; bf16 autocast where the CPU has it
    onnx  classifier.onnx       ONNX (ONNX Runtime), fp32
    int8  classifier.int8.onnx  ONNX, static int8 quantization calibrated on validation images

`export_formats` writes the chosen ones from one model; `python -m fakeface.export format=...`
and training's `export=` key both call it.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakeface.deploy.export import export_classifier
from fakeface.deploy.modelfile import ClassifierInfo, load_classifier
from fakeface.errors import ConfigError
from fakeface.preprocess import find_images, preprocess_file

FILES = {"ts": "classifier.ts", "onnx": "classifier.onnx", "int8": "classifier.int8.onnx"}
MAX_AUC_DROP = 0.005  # int8 is offered only while it costs at most this much ROC-AUC
log = logging.getLogger(__name__)


def parse_formats(formats: Any, key: str = "format") -> list[str]:
    """`ts`, `onnx`, `int8` or a list of them (true: ts, false/null: none), in FILES order."""
    if formats is True:
        return ["ts"]
    if not formats:
        return []
    names = [formats] if isinstance(formats, str) else [str(name) for name in formats]
    unknown = sorted(set(names) - set(FILES))
    if unknown:
        raise ConfigError(
            f"{key}={formats}: unknown {unknown}; use {list(FILES)} or a list of them"
        )
    return [name for name in FILES if name in names]


def export_formats(
    model: nn.Module,
    out_dir: str | Path,
    formats: Any,
    *,
    calib: str | Path | None = None,
    calib_images: int = 256,
    **contract: Any,
) -> dict[str, Path]:
    """Write `model` in each of `formats` into `out_dir` (names from FILES); format -> path.

    Args:
        model, contract: as `export_classifier` takes them (source, temperature, calibration...).
        calib: int8 only: a training run's split.csv (its validation rows) or a folder/glob of
            images to calibrate the activation ranges on.
        calib_images: at most this many calibration images (evenly spread over the list).
    """
    names = parse_formats(formats)
    if "int8" in names and not calib:
        raise ConfigError(
            "format=int8 needs calibration images: calib=<run>/split.csv (its validation "
            "split) or calib=<folder of images>"
        )
    out_dir = Path(out_dir)
    paths = {
        name: export_classifier(model, out_dir / FILES[name], **contract)
        for name in names
        if name != "int8"
    }
    if "int8" in names:
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = paths.get("onnx") or export_classifier(
                model, Path(tmp) / FILES["onnx"], **contract
            )
            paths["int8"] = export_int8(fp32, out_dir / FILES["int8"], calib, calib_images)
    return paths


def export_int8(fp32_path: Path, out_path: Path, calib: str | Path, limit: int = 256) -> Path:
    """Quantize an fp32 ONNX classifier to int8 on calibration images; record how in its metadata.

    The metadata also says how far int8 moved p_fake on those images (max and mean absolute
    difference), the share of images whose label (argmax) it kept and, on labelled images
    (a split.csv, or fake/ and real/ folders), ROC-AUC fp32 vs int8: a drop over MAX_AUC_DROP
    logs a warning not to deploy the file and records `within_rule: false`.
    """
    import onnxruntime

    from fakeface.deploy.onnxfile import load_onnx, quantize_int8, write_metadata

    fp32, info = load_classifier(fp32_path)
    files, labels = calibration_files(calib, limit)
    images = torch.stack([preprocess_file(path, info.image_size) for path in files])
    quantize_int8(fp32_path, out_path, images.split(32))
    int8, _ = load_onnx(out_path)  # no fakeface metadata yet
    with torch.inference_mode():
        p32, p8 = fp32(images), int8(images)
    moved = (p8[:, 0] - p32[:, 0]).abs()
    quantization = {
        "method": "ONNX Runtime static quantization, QDQ, per-channel int8 weights, "
        "uint8 activations, MinMax calibration; the logits layer and softmax in fp32",
        "onnxruntime_version": onnxruntime.__version__,
        "calibration": {"source": str(Path(calib).resolve()), "images": len(files)},
        "p_fake_max_abs_diff": round(float(moved.max()), 5),
        "p_fake_mean_abs_diff": round(float(moved.mean()), 5),
        "label_agreement": round(float((p8.argmax(1) == p32.argmax(1)).float().mean()), 4),
        **auc_check(p32[:, 0].numpy(), p8[:, 0].numpy(), labels, info.class_names[0]),
    }
    if quantization.get("within_rule") is False:
        log.warning(
            "int8 lowers ROC-AUC on the calibration images by %.4f (fp32 %.4f, int8 %.4f), "
            "more than the %.3f allowed: do not deploy %s; use classifier.onnx or classifier.ts",
            *(quantization["roc_auc"][k] for k in ("drop", "fp32", "int8")), MAX_AUC_DROP,
            out_path,
        )  # fmt: skip
    int8_info = dataclasses.replace(info, quantization=quantization)
    del int8  # the session holds the file open on some systems
    write_metadata(out_path, int8_info.to_json())
    load_classifier(out_path)  # the file as users will load it
    return out_path


def auc_check(p32: np.ndarray, p8: np.ndarray, labels: list[str], positive: str) -> dict:
    """ROC-AUC of fp32 and int8 on the labelled calibration images and whether int8 keeps it
    within MAX_AUC_DROP; {} when the images do not carry both classes (a folder of one kind)."""
    y = np.array([label == positive for label in labels])
    if not y.any() or y.all() or any(label is None for label in labels):
        return {}
    fp32, int8 = roc_auc(p32, y), roc_auc(p8, y)
    drop = round(fp32 - int8, 4)
    return {
        "roc_auc": {"fp32": round(fp32, 4), "int8": round(int8, 4), "drop": drop},
        "within_rule": bool(drop <= MAX_AUC_DROP),
    }


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC by torchmetrics, as `fakeface.evaluation.metrics` computes it (ties count one half)."""
    from torchmetrics.functional.classification import binary_auroc

    return float(binary_auroc(torch.as_tensor(scores), torch.as_tensor(positive).long()))


def calibration_files(calib: str | Path, limit: int) -> tuple[list[Path], list[str | None]]:
    """Images for int8 calibration (a split.csv's validation rows, else `find_images(calib)`)
    and their class names (the split's class_name, else the parent folder's name)."""
    spec = Path(str(calib)).expanduser()
    if spec.suffix == ".csv":
        if not spec.is_file():
            raise ConfigError(f"calib={calib}: no such split file (a training run's split.csv)")
        with spec.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("split") == "valid"]
        rows = [r for r in rows if r.get("image_path")]
        files = [Path(r["image_path"]) for r in rows]
        labels = [r.get("class_name") for r in rows]
        if not files:
            raise ConfigError(
                f"calib={calib}: no rows with split=valid (columns image_path, split)"
            )
    else:
        files = find_images(str(calib), key="calib")
        labels = [path.parent.name for path in files]
    if limit < 1:
        raise ConfigError(f"calib_images={limit}: use a whole number >= 1, e.g. 256")
    pick = sorted(set(np.linspace(0, len(files) - 1, min(limit, len(files))).round().astype(int)))
    return [files[i] for i in pick], [labels[i] for i in pick]


def describe(path: Path, info: ClassifierInfo) -> str:
    """One line for the export's console output."""
    kind = "int8 ONNX" if info.quantization else "ONNX" if path.suffix == ".onnx" else "TorchScript"
    if info.quantization.get("within_rule") is False:
        kind += ", ROC-AUC drop over the limit: do not deploy"
    return (
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {kind}): {info.arch}, "
        f"{info.image_size}x{info.image_size} RGB in [0,1] -> {list(info.class_names)} "
        f"probabilities, temperature {info.temperature:.3g}"
    )
