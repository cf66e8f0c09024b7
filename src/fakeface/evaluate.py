"""Evaluate an exported classifier on a labelled split: metrics, plots and a report.

    python -m fakeface.evaluate classifier=<classifier.ts> data.root=<140k root> [split=test]
        [threshold=0.5|auto] [tta=true] [robustness=true]
    python -m fakeface.evaluate classifier=<run>/classifier.ts data=folder data.root=<folder>
    python -m fakeface.evaluate classifier=<ts> data=folder "groups={sg3: <folder>/fake}" robustness=history

Writes report.md, report.json, predictions.csv, roc.png, reliability.png, confusion.png (and
robustness.png) into the run directory, with a row per generator, per real source and per
(generator, real source) pair (fakeface.evaluation.groups). The positive class is `fake`: ROC-AUC and average
precision rank images by p_fake, and an image is called fake when p_fake >= threshold.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from fakeface.cli import hydra_main
from fakeface.data.index import folder_list, source_name, sources
from fakeface.deploy.inference import CLEAN, score_files
from fakeface.deploy.modelfile import load_classifier, model_dtype, precision_dtype
from fakeface.errors import ConfigError
from fakeface.evaluation.groups import index_groups, per_group
from fakeface.evaluation.metrics import (
    HEADLINE,
    POSITIVE,
    auto_threshold,
    binary_metrics,
    uncalibrated,
)
from fakeface.evaluation.perturb import Perturbation, history_variants, perturbation
from fakeface.evaluation.plots import (
    confusion_figure,
    plot_reliability,
    plot_robustness,
    plot_roc,
    save,
)
from fakeface.evaluation.report import print_summary, render_markdown

log = logging.getLogger(__name__)


def check_config(cfg: DictConfig) -> float | str:
    """Raise ConfigError naming the key for unusable values; return the threshold (float | auto)."""
    threshold = cfg.threshold
    if threshold != "auto" and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 <= threshold <= 1
    ):
        raise ConfigError(f"threshold={threshold!r}: use a probability in [0, 1] or threshold=auto")
    for key, smallest in (("batch_size", 1), ("ece_bins", 1), ("data.num_workers", 0)):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            raise ConfigError(f"{key}={value!r}: must be a whole number >= {smallest}")
    if "sweep" in robustness_modes(cfg.robustness):
        for name in cfg.perturbations:
            try:
                perturbation(str(name))
            except ValueError as err:
                raise ConfigError(f"perturbations: {err}") from None
    return threshold if threshold == "auto" else float(threshold)


def data_config(cfg: DictConfig) -> dict[str, Any]:
    """The data settings, with `split_file` set to the training run's split.csv where it applies.

    With data=folder and no data.split_file, a split.csv beside the classifier (what a training
    run writes next to its classifier.ts) is the split the model was trained with. It is reused
    only when it indexes the folder asked for (data.root, or no data.root given; a run with
    several folders or a data.val_root lists each), and then only that folder's rows are scored,
    so that another folder is never silently replaced by the training run's own images
    (`run_split=false` re-splits always). data.root then names the folder(s) scored.
    """
    data = OmegaConf.to_container(cfg.data, resolve=True)
    root = data.get("root")
    use_split = cfg.run_split and cfg.classifier  # the released model has no split.csv
    if data.get("layout") == "folder" and not data.get("split_file") and use_split:
        beside = Path(cfg.classifier).expanduser().parent / "split.csv"
        asked = {_resolved(r) for r in folder_list(root)}
        if beside.is_file() and (not asked or asked <= set(_split_sources(beside))):
            log.info("data=folder: using the training run's split %s", beside)
            data["split_file"] = str(beside)
    if data.get("split_file"):
        split_file = Path(data["split_file"]).expanduser()
        if not split_file.is_file():
            raise ConfigError(f"data.split_file={split_file}: no such file")
        if root is None:
            folders = _split_sources(split_file)
            data["root"] = folders[0] if len(folders) == 1 else folders or None
    return data


def _resolved(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def _split_sources(split_file: Path) -> list[str]:
    """The folders a split file's images come from, in order of first appearance."""
    return list(dict.fromkeys(sources(pd.read_csv(split_file))))


ROBUSTNESS = {False: (), True: ("sweep",), "sweep": ("sweep",), "history": ("history",),
              "all": ("sweep", "history")}  # fmt: skip


def robustness_modes(value: Any) -> tuple[str, ...]:
    """`robustness` -> the sweeps it asks for: () | ("sweep",) | ("history",) | both."""
    key = value if isinstance(value, bool) else str(value)
    if key not in ROBUSTNESS:
        raise ConfigError(f"robustness={value!r}: use false, true (= sweep), sweep, history or all")
    return ROBUSTNESS[key]


def load_model(cfg: DictConfig) -> tuple[Any, Any, tuple[str, str], int]:
    """The classifier, its metadata, its (fake, other) class names and the fake column."""
    model, info = load_classifier(cfg.classifier, cfg.device)
    if POSITIVE not in info.class_names or len(info.class_names) != 2:
        raise ConfigError(
            f"{cfg.classifier} predicts {list(info.class_names)}; evaluate needs ['fake', <other>]"
        )
    names = (POSITIVE, next(c for c in info.class_names if c != POSITIVE))
    return model, info, names, info.class_names.index(POSITIVE)


def evaluation_frame(cfg: DictConfig, datamodule: Any, names: tuple[str, str]) -> pd.DataFrame:
    """The images to score (image_path, class_name, group): `split` of data, then `groups`.

    data's images are grouped by their source folder's name, a `groups` entry by its key; a
    group's reals are one real source, its fakes one generator (fakeface.evaluation.groups).
    """
    frames = []
    if datamodule is not None:
        frame = datamodule.index(cfg.split)
        unknown = sorted(set(frame["class_name"]) - set(names))
        if unknown:
            raise ConfigError(
                f"split {cfg.split!r} has class folders {unknown} the model does not know "
                f"({list(names)})"
            )
        group = sources(frame).map(source_name)  # a class folder keeps its parent: faces-dev/real
        frames.append(frame[["image_path", "class_name"]].assign(group=group))
    extra = index_groups(cfg.groups)
    frames.append(extra.assign(class_name=extra["class_name"].replace("real", names[1])))
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise ConfigError("nothing to evaluate: give data.root (and split) or groups")
    return frame


def choose_threshold(
    cfg: DictConfig, threshold: float | str, datamodule: Any, scorer: Any
) -> tuple[float, dict[str, Any]]:
    """The threshold and how it was chosen (threshold=auto: best balanced accuracy on val)."""
    if threshold != "auto":
        return float(threshold), {"mode": "fixed", "value": threshold}
    val_split = datamodule.hparams.val_split
    if val_split == cfg.split:
        log.warning("threshold=auto tuned on split %r, the split being evaluated", val_split)
    val = datamodule.index(val_split)
    p_fake, ok = scorer(val["image_path"], f"{val_split} (threshold)")
    value, balanced = auto_threshold(p_fake[ok], (val["class_name"] == POSITIVE).to_numpy()[ok])
    return value, {
        "mode": "auto", "value": value, "val_split": val_split,
        "val_images": int(ok.sum()), "val_balanced_accuracy": balanced,
    }  # fmt: skip


def class_variants(cfg: DictConfig) -> dict[str, dict[str, Perturbation | None]]:
    """Variant name -> {"real": perturbation, "fake": perturbation} (None: as stored)."""
    modes = robustness_modes(cfg.robustness)
    variants: dict[str, dict[str, Perturbation | None]] = {CLEAN: {"real": None, "fake": None}}
    if "sweep" in modes:
        for name in cfg.perturbations:
            f = perturbation(str(name))
            variants[str(name)] = {"real": f, "fake": f}
    if "history" in modes:
        variants |= history_variants()
    return variants


def score_by_class(
    model: Any, info: Any, frame: pd.DataFrame, variants: dict[str, dict[str, Any]],
    column: int, scoring: dict[str, Any], label: str,
) -> tuple[dict[str, np.ndarray], dict[int, str], np.ndarray]:  # fmt: skip
    """p_fake of every row under every variant, each class through its own perturbation, the
    decoding errors, and (with a detector) whether each image had a face."""
    is_fake = (frame["class_name"] == POSITIVE).to_numpy()
    scores = {name: np.full(len(frame), np.nan, np.float32) for name in variants}
    errors: dict[int, str] = {}
    faces = np.full(len(frame), None, dtype=object)  # with a detector: face found or not
    for fake in (True, False):
        rows = np.flatnonzero(is_fake == fake)
        if not len(rows):
            continue
        side = "fake" if fake else "real"
        mine = {name: v[side] for name, v in variants.items()}
        scored = score_files(
            model, info, frame["image_path"].iloc[rows], variants=mine,
            progress=f"{label} ({side})", **scoring,
        )  # fmt: skip
        for name, probs in scored.probs.items():
            scores[name][rows] = probs[:, column]
        errors |= {int(rows[i]): e for i, e in scored.errors.items()}
        faces[rows] = scored.faces
    return scores, errors, faces


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score `cfg.split` (and `groups`), choose the threshold, compute the metrics, write files."""
    threshold = check_config(cfg)
    model, info, names, column = load_model(cfg)
    dtype = model_dtype(model, precision_dtype(cfg.precision, cfg.device))  # ONNX: its own
    data = data_config(cfg) if cfg.split != "none" or threshold == "auto" else None
    datamodule = _datamodule(data)
    frame = evaluation_frame(cfg, datamodule if cfg.split != "none" else None, names)
    scoring = {
        "batch_size": cfg.batch_size, "tta": cfg.tta, "dtype": dtype,
        "num_workers": cfg.data.num_workers, "margin": cfg.margin,
        "detector": OmegaConf.to_container(cfg.detector) if cfg.detect else None,
    }  # fmt: skip

    def scorer(paths: Any, label: str) -> tuple[np.ndarray, np.ndarray]:
        probs = score_files(model, info, paths, progress=label, **scoring).probs[CLEAN]
        return probs[:, column], ~np.isnan(probs[:, 0])

    threshold, threshold_info = choose_threshold(cfg, threshold, datamodule, scorer)
    variants = class_variants(cfg)
    start = time.perf_counter()
    scores, errors, faces = score_by_class(model, info, frame, variants, column, scoring, cfg.split)
    seconds = time.perf_counter() - start
    results = score_results(cfg, scores, frame, threshold, names, info)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(frame, scores, errors, threshold, names, out_dir)
    write_plots(cfg, scores[CLEAN], frame, results, names, out_dir)
    report = {
        "model": {
            "path": str(cfg.classifier or "released: " + info.name), "arch": info.arch, "image_size": info.image_size,
            "class_names": list(info.class_names), "source": info.source,
        },
        "data": {
            "root": data["root"] if data and cfg.split != "none" else None,
            "layout": data.get("layout", "splits") if data else None, "split": cfg.split,
            "split_file": data.get("split_file") if data else None, "images": len(frame),
            "groups": {str(k): str(v) for k, v in (cfg.groups or {}).items()},
        },
        "threshold": threshold_info, "tta": bool(cfg.tta),
        "precision": str(dtype).removeprefix("torch.") if dtype is not None else "fp32",
        "ece_bins": cfg.ece_bins,
        "images_per_s": len(frame) / seconds if seconds else math.nan,
        **results,
        "unreadable": [{"path": frame["image_path"][i], "reason": e} for i, e in sorted(errors.items())],
        "faces": face_counts(frame, faces) if cfg.detect else None,
    }  # fmt: skip
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.md").write_text(render_markdown(report))
    print_summary(report, out_dir)
    return report


def face_counts(frame: pd.DataFrame, faces: np.ndarray) -> dict[str, Any]:
    """detect=true: images read, images with a face, per group; the images without one (not
    scored: a scene with no face is no evidence either way)."""
    found = faces == True  # noqa: E712 (None: unreadable)
    read = faces != None  # noqa: E711
    per_group = {
        str(g): {"images": int(read[m].sum()), "with_face": int(found[m].sum())}
        for g in dict.fromkeys(frame["group"])
        for m in [(frame["group"] == g).to_numpy()]
    }
    return {
        "images": int(read.sum()), "with_face": int(found.sum()), "groups": per_group,
        "no_face": frame["image_path"][read & ~found].tolist(),
    }  # fmt: skip


def _datamodule(data: dict[str, Any] | None) -> Any:
    if data is None:
        return None
    from hydra.utils import instantiate

    datamodule = instantiate(data, _convert_="all")
    datamodule.prepare_data()  # data=synthetic: generate on first use
    return datamodule


def score_results(
    cfg: DictConfig, scores: dict[str, np.ndarray], frame: pd.DataFrame, threshold: float,
    names: tuple[str, str], info: Any,
) -> dict[str, Any]:  # fmt: skip
    """report.json's metrics: overall per variant, calibration, per group and per pair."""
    is_fake = (frame["class_name"] == POSITIVE).to_numpy()
    ok = ~np.isnan(scores[CLEAN])
    if not ok.any():
        raise ConfigError(f"none of the {len(frame)} images of split {cfg.split!r} is readable")
    bins = cfg.ece_bins
    results = {
        name: binary_metrics(p[ok], is_fake[ok], threshold, n_bins=bins, names=names)
        for name, p in scores.items()
    }
    # The file's own probabilities are calibrated (divided by its temperature); say what the
    # network's raw ones would have scored, so the report shows ECE before and after.
    raw = uncalibrated(scores[CLEAN][ok], info.temperature)
    robustness = [
        {"perturbation": name, **{k: r[k] for k in HEADLINE}} for name, r in results.items()
    ]
    groups = frame["group"].to_numpy()[ok]
    return {
        "metrics": results[CLEAN],
        "calibration": {
            "temperature": info.temperature, "fitted_on": info.calibration,
            "ece_uncalibrated": binary_metrics(raw, is_fake[ok], threshold, n_bins=bins)["ece"],
        },
        "robustness": robustness if len(results) > 1 else [],
        "robustness_metrics": {k: v for k, v in results.items() if k != CLEAN},
        **per_group({k: v[ok] for k, v in scores.items()}, is_fake[ok], groups, threshold, bins),
    }  # fmt: skip


def write_predictions(
    frame: pd.DataFrame, scores: dict[str, np.ndarray], errors: dict[int, str],
    threshold: float, names: tuple[str, str], out_dir: Path,
) -> None:  # fmt: skip
    """predictions.csv: path, class, group, p_fake, the call, p_fake per variant, error."""
    predictions = frame[["image_path", "class_name", "group"]].copy()
    predictions["p_fake"] = scores[CLEAN]
    called_fake = scores[CLEAN].astype(np.float64) >= threshold  # as binary_metrics compares
    predictions["predicted"] = np.where(called_fake, names[0], names[1])
    predictions.loc[np.isnan(scores[CLEAN]), "predicted"] = ""
    for name, p in scores.items():
        if name != CLEAN:
            predictions[f"p_fake_{name}"] = p
    predictions["error"] = [errors.get(i, "") for i in range(len(frame))]
    predictions.to_csv(out_dir / "predictions.csv", index=False)


def write_plots(
    cfg: DictConfig, p_fake: np.ndarray, frame: pd.DataFrame, results: dict[str, Any],
    names: tuple[str, str], out_dir: Path,
) -> None:  # fmt: skip
    """roc.png, reliability.png, confusion.png (and robustness.png) of the readable images."""
    ok = ~np.isnan(p_fake)
    p_ok, fake_ok = p_fake[ok], (frame["class_name"] == POSITIVE).to_numpy()[ok]
    metrics = results["metrics"]
    plot_roc(p_ok, fake_ok, metrics, out_dir / "roc.png")
    plot_reliability(p_ok, fake_ok, metrics, cfg.ece_bins, out_dir / "reliability.png")
    title = f"{cfg.split}: threshold {metrics['threshold']:.3g}"
    save(confusion_figure(metrics["confusion_matrix"], names, title), out_dir / "confusion.png")
    if results["robustness"]:
        plot_robustness(results["robustness"], out_dir / "robustness.png")


@hydra_main("evaluate")
def main(cfg: DictConfig) -> float:
    """CLI: evaluate, write the report into the run directory."""
    report = evaluate(cfg)
    return report["metrics"]["accuracy"]  # what a Hydra sweeper would read


if __name__ == "__main__":
    main()
