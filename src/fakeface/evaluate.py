"""Evaluate an exported classifier on a labelled split: metrics, plots and a report.

    python -m fakeface.evaluate model=<classifier.ts> data.root=<140k root> [split=test]
        [threshold=0.5|auto] [tta=true] [robustness=true] [out=DIR]
    python -m fakeface.evaluate model=<run>/classifier.ts data=folder data.root=<folder>

Writes report.md, report.json, predictions.csv, roc.png, reliability.png, confusion.png (and
robustness.png) into the run directory. The positive class is `fake`: ROC-AUC and average
precision rank images by p_fake, and an image is called fake when p_fake >= threshold.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.config_store import ConfigStore
from numpy.typing import ArrayLike
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from torch.utils.data import DataLoader, Dataset
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_roc,
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from fakeface.cli import ConfigError, one_line_errors
from fakeface.modelfile import ClassifierInfo, classify, load_classifier, precision_dtype
from fakeface.perturb import Perturbation, perturbation
from fakeface.preprocess import BadImageError, load_image, resize_rgb, to_tensor

log = logging.getLogger(__name__)

POSITIVE = "fake"  # the class ROC-AUC / AP treat as positive: the detector flags generated faces
CLEAN = "clean"  # the unperturbed images, first row of the robustness table
HEADLINE = ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "ece")
MAX_LISTED = 50  # unreadable files named in report.md (report.json lists them all)


# ---------------------------------------------------------------------------------------------
# Metrics


def binary_metrics(
    p_fake: ArrayLike,
    is_fake: ArrayLike,
    threshold: float = 0.5,
    *,
    n_bins: int = 15,
    names: tuple[str, str] = (POSITIVE, "real"),
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, ROC-AUC, AP, ECE and the confusion matrix.

    Hard predictions are `p_fake >= threshold` (fake). ECE is the top-label calibration error
    (Guo et al. 2017): confidence max(p_fake, 1 - p_fake), equal-width bins over [0, 1].
    ROC-AUC and AP are None when only one class is present.

    Args:
        p_fake: N probabilities of the fake class, in [0, 1].
        is_fake: N truths (1/True = fake).
        threshold: decision threshold on p_fake.
        n_bins: calibration bins.
        names: (positive, negative) class names for `per_class` and the confusion matrix.
    """
    p = torch.from_numpy(np.array(p_fake, dtype=np.float64))  # a copy: inputs may be read-only
    fake = torch.from_numpy(np.array(is_fake, dtype=bool))
    if p.ndim != 1 or p.shape != fake.shape or len(p) == 0:
        raise ValueError(
            f"p_fake and is_fake must be equal-length 1-d, got {p.shape}, {fake.shape}"
        )
    if torch.isnan(p).any() or p.min() < 0 or p.max() > 1:
        raise ValueError("p_fake must hold probabilities in [0, 1] (no NaN)")
    # Class indices in `names` order: 0 = fake (positive), 1 = the other class.
    target = (~fake).long()
    predicted = (p < threshold).long()  # p >= threshold -> 0 (fake)
    two = {"num_classes": 2, "average": None}
    precision = multiclass_precision(predicted, target, **two)
    recall = multiclass_recall(predicted, target, **two)
    f1 = multiclass_f1_score(predicted, target, **two)
    # Top-label ECE: torchmetrics' binary version bins p_fake against the fake rate instead.
    probs = torch.stack([p, 1 - p], dim=1)
    ece = multiclass_calibration_error(probs, target, num_classes=2, n_bins=n_bins, norm="l1")
    balanced = auc = ap = None
    if fake.any() and not fake.all():  # ranking and balanced accuracy need both classes
        balanced = float(recall.mean())
        auc = float(binary_auroc(p, fake.long()))
        ap = float(binary_average_precision(p, fake.long()))
    per_class = {
        name: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int((target == k).sum()),
        }
        for k, name in enumerate(names)
    }
    return {
        "n": len(p),
        "threshold": float(threshold),
        "accuracy": float(multiclass_accuracy(predicted, target, num_classes=2, average="micro")),
        "balanced_accuracy": balanced,
        "roc_auc": auc,
        "average_precision": ap,
        "ece": float(ece),
        "per_class": per_class,
        # rows: true class, columns: predicted class, both in `names` order
        "confusion_matrix": multiclass_confusion_matrix(predicted, target, 2).tolist(),
        "classes": list(names),
    }


def auto_threshold(p_fake: ArrayLike, is_fake: ArrayLike) -> tuple[float, float]:
    """The threshold maximising balanced accuracy of `p_fake >= t`; returns (t, balanced accuracy).

    Any t between two neighbouring distinct scores classifies the data alike, so t is the
    midpoint of the best such gap; among equally good gaps, the one nearest 0.5.
    """
    p = torch.from_numpy(np.array(p_fake, dtype=np.float64))  # a copy: inputs may be read-only
    fake = torch.from_numpy(np.array(is_fake, dtype=bool)).long()
    if len(p) == 0 or fake.all() or not fake.any():
        raise ValueError("threshold=auto needs validation images of both classes")
    # Descending distinct scores; point 0 is the "nothing is fake" end of the curve, skipped.
    fpr, tpr, cuts = binary_roc(p, fake)
    balanced = ((tpr + 1 - fpr) / 2)[1:]
    cuts = cuts[1:]
    below = torch.cat([cuts[1:], cuts[-1:]])  # the next lower score (the lowest keeps its own)
    candidates = (cuts + below) / 2
    best = balanced.max()
    tied = candidates[torch.isclose(balanced, best, rtol=0, atol=1e-12)]
    threshold = tied[(tied - 0.5).abs().argmin()]
    return float(threshold), float(best)


# ---------------------------------------------------------------------------------------------
# Scoring images


class EvalImages(Dataset):
    """Image files -> (index, V x S x S x 3 uint8 pixels or None, error): one plane per variant.

    Each variant is a perturbation of the decoded full-resolution RGB image (None: unchanged),
    applied before the standard resize, so the file is decoded once for the whole sweep.
    """

    def __init__(
        self, paths: Sequence[str | Path], image_size: int, variants: Sequence[Perturbation | None]
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.image_size = image_size
        self.variants = list(variants)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str]:
        try:
            image = load_image(self.paths[index])
        except BadImageError as err:
            return index, None, str(err.__cause__ or err)
        planes = [
            resize_rgb(image if f is None else f(image), self.image_size) for f in self.variants
        ]
        return index, np.stack(planes), ""


def _keep_items(items: list[tuple]) -> list[tuple]:
    return items  # unreadable files have no pixels: score_images batches the readable ones


def score_images(
    model: torch.nn.Module,
    info: ClassifierInfo,
    paths: Sequence[str | Path],
    *,
    variants: Mapping[str, Perturbation | None] | None = None,
    batch_size: int = 64,
    tta: bool = False,
    dtype: torch.dtype | None = None,
    num_workers: int = 0,
    progress: str | None = None,
) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """p_fake of every image under every variant; returns ({variant: N floats}, {index: error}).

    Unreadable files get NaN and their decoding error.

    Args:
        model, info: from `fakeface.modelfile.load_classifier`.
        paths: image files.
        variants: name -> perturbation (None = the image as it is); default {"clean": None}.
        batch_size: images per forward pass.
        tta: average the probabilities of the image and its horizontal mirror.
        dtype: autocast dtype (`precision_dtype`), None for fp32.
        num_workers: DataLoader processes decoding (and perturbing) images.
        progress: label of a rich progress bar, None for no bar.
    """
    variants = dict(variants or {CLEAN: None})
    column = info.class_names.index(POSITIVE)
    dataset = EvalImages(paths, info.image_size, list(variants.values()))
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_keep_items
    )
    scores = {name: np.full(len(dataset), np.nan, np.float32) for name in variants}
    errors: dict[int, str] = {}
    bar = Progress(
        TextColumn(progress or ""), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        disable=progress is None,
    )  # fmt: skip
    with bar:
        task = bar.add_task("images", total=len(dataset))
        for items in loader:
            errors.update({index: error for index, _, error in items if error})
            good = [(index, pixels) for index, pixels, _ in items if pixels is not None]
            if good:
                rows = [index for index, _ in good]
                stacked = np.stack([pixels for _, pixels in good])  # B x V x S x S x 3
                for v, name in enumerate(variants):
                    batch = to_tensor(stacked[:, v])
                    p = classify(model, batch, dtype, tta)
                    scores[name][rows] = p[:, column].numpy()
            bar.advance(task, len(items))
    return scores, errors


# ---------------------------------------------------------------------------------------------
# Plots and report


def _pyplot():  # noqa: ANN202 (the matplotlib.pyplot module)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(p_fake: np.ndarray, is_fake: np.ndarray, metrics: dict[str, Any], path: Path) -> None:
    """ROC curve (positive = fake) with the operating point of the threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if metrics["roc_auc"] is not None:
        fpr, tpr, _ = binary_roc(
            torch.as_tensor(p_fake, dtype=torch.float64), torch.as_tensor(is_fake).long()
        )
        ax.plot(fpr, tpr, label=f"AUC {metrics['roc_auc']:.4f}")
        fake, other = metrics["per_class"].values()
        ax.plot(
            1 - other["recall"], fake["recall"], "o", label=f"threshold {metrics['threshold']:.3g}"
        )
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(
        xlabel="false positive rate (real called fake)", ylabel="true positive rate (fakes caught)"
    )
    ax.set(title="ROC, positive class: fake", xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(
    p_fake: np.ndarray, is_fake: np.ndarray, metrics: dict[str, Any], n_bins: int, path: Path
) -> None:
    """Reliability diagram of the top-label confidence (the bins of the ECE) with bin counts."""
    plt = _pyplot()
    p = np.asarray(p_fake, np.float64)
    confidence = np.maximum(p, 1 - p)
    correct = (p >= 0.5) == np.asarray(is_fake, bool)  # the top label: fake on a 0.5 tie
    edges = np.linspace(0, 1, n_bins + 1)
    # Lower-inclusive bins as torchmetrics bins them; a confidence of exactly 1 joins the last.
    bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    filled = counts > 0
    accuracy = np.bincount(bins, correct, n_bins)[filled] / counts[filled]
    mean_conf = np.bincount(bins, confidence, n_bins)[filled] / counts[filled]
    centres, width = (edges[:-1] + edges[1:]) / 2, 1 / n_bins

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.bar(centres[filled], accuracy, width=width, edgecolor="black", label="accuracy")
    top.bar(centres[filled], mean_conf - accuracy, bottom=accuracy, width=width, color="red",
            alpha=0.3, label="gap to confidence")  # fmt: skip
    top.set(
        ylabel="accuracy",
        ylim=(0, 1),
        title=f"reliability, ECE {metrics['ece']:.4f} ({n_bins} bins)",
    )
    top.legend(loc="upper left")
    bottom.bar(centres, counts, width=width, edgecolor="black")
    # Two classes: the top-label confidence is >= 0.5, so the bins below the one holding 0.5 are empty.
    low = edges[n_bins // 2]
    top.plot([low, 1], [low, 1], "--", color="grey", lw=1)
    bottom.set(xlabel="confidence max(p_fake, p_real)", ylabel="images", xlim=(low, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(metrics: dict[str, Any], split: str, path: Path) -> None:
    """The confusion matrix (rows true, columns predicted) as a labelled heat map."""
    plt = _pyplot()
    matrix = np.asarray(metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, cmap="Blues", vmin=0)
    for (row, col), count in np.ndenumerate(matrix):
        share = count / max(matrix[row].sum(), 1)
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(
            col, row, f"{count}\n{share:.1%}", ha="center", va="center", fontsize=12, color=colour
        )
    ticks = {"xticks": [0, 1], "yticks": [0, 1]}
    ax.set(**ticks, xticklabels=metrics["classes"], yticklabels=metrics["classes"])
    ax.set(
        xlabel="predicted", ylabel="true", title=f"{split}: threshold {metrics['threshold']:.3g}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_robustness(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy and ROC-AUC for the clean images and each perturbation."""
    plt = _pyplot()
    names = [row["perturbation"] for row in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.65 * len(names) + 1.5), 4))
    for key, label in (("accuracy", "accuracy"), ("roc_auc", "ROC-AUC")):
        values = [math.nan if row[key] is None else row[key] for row in rows]
        ax.plot(names, values, "o-", label=label)
    ax.axhline(0.5, ls="--", color="grey", lw=1, label="chance")
    ax.set(ylim=(0, 1.02), ylabel="score", title="robustness to perturbations")
    ax.tick_params(axis="x", rotation=45)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    """report.json's content as a human-readable markdown page (images linked relatively)."""
    m, data, thr = report["metrics"], report["data"], report["threshold"]
    positive, negative = m["classes"]
    how = (
        f"auto: best balanced accuracy {thr['val_balanced_accuracy']:.4f} on split "
        f"`{thr['val_split']}` ({thr['val_images']} images)"
        if thr["mode"] == "auto"
        else "fixed"
    )
    lines = [
        f"# fakeface evaluation: `{Path(report['model']['path']).name}` on `{data['split']}`",
        "",
        f"- model: `{report['model']['path']}` ({report['model']['arch']}, "
        f"{report['model']['image_size']}x{report['model']['image_size']})",
        f"- data: `{data['root']}`, split `{data['split']}`"
        + (f" from `{data['split_file']}`" if data["split_file"] else "")
        + f": {m['n']} images scored ({m['per_class'][positive]['support']} {positive}, "
        f"{m['per_class'][negative]['support']} {negative}), {len(report['unreadable'])} unreadable",
        f"- threshold: {thr['value']:.4g} ({how}); an image is called {positive} when "
        f"p_{positive} >= threshold",
        f"- precision {report['precision']}, TTA {'on (image + mirror)' if report['tta'] else 'off'}, "
        f"{report['images_per_s']:.0f} images/s (decoding, perturbations and model)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {_number(m['accuracy'])} |",
        f"| balanced accuracy | {_number(m['balanced_accuracy'])} |",
        f"| ROC-AUC (positive: {positive}) | {_number(m['roc_auc'])} |",
        f"| average precision (positive: {positive}) | {_number(m['average_precision'])} |",
        f"| ECE ({report['ece_bins']} bins, top-label) | {_number(m['ece'])} |",
        "",
        "| class | precision | recall | F1 | images |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {_number(c['precision'])} | {_number(c['recall'])} | {_number(c['f1'])} "
            f"| {c['support']} |"
            for name, c in m["per_class"].items()
        ),
        "",
        "Confusion matrix (rows: true class, columns: predicted class):",
        "",
        f"| | predicted {positive} | predicted {negative} |",
        "|---|---|---|",
        *(
            f"| {name} | {row[0]} | {row[1]} |"
            for name, row in zip(m["classes"], m["confusion_matrix"], strict=True)
        ),
        "",
        "![ROC](roc.png) ![reliability](reliability.png) ![confusion matrix](confusion.png)",
    ]
    if report["robustness"]:
        lines += [
            "",
            "## Robustness",
            "",
            "Each perturbation is applied to the decoded full-resolution image before the standard "
            f"resize to {report['model']['image_size']}; same threshold.",
            "",
            "| perturbation | accuracy | balanced acc. | ROC-AUC | AP | ECE |",
            "|---|---|---|---|---|---|",
            *(
                f"| {r['perturbation']} | {_number(r['accuracy'])} | {_number(r['balanced_accuracy'])} "
                f"| {_number(r['roc_auc'])} | {_number(r['average_precision'])} | {_number(r['ece'])} |"
                for r in report["robustness"]
            ),
            "",
            "![robustness](robustness.png)",
        ]
    if report["unreadable"]:
        lines += ["", "## Unreadable images (skipped)", ""]
        lines += [f"- `{u['path']}`: {u['reason']}" for u in report["unreadable"][:MAX_LISTED]]
        if len(report["unreadable"]) > MAX_LISTED:
            lines.append(f"- ... {len(report['unreadable']) - MAX_LISTED} more in report.json")
    return "\n".join(lines) + "\n"


def print_summary(report: dict[str, Any], out_dir: Path) -> None:
    """The headline metrics and the robustness table in the terminal (rich)."""
    m = report["metrics"]
    table = Table(
        title=f"fakeface evaluate: {report['data']['split']}, {m['n']} images", title_justify="left"
    )
    for column in ("accuracy", "balanced acc.", "ROC-AUC", "AP", "ECE", "threshold"):
        table.add_column(column, justify="right")
    table.add_row(*(_number(m[key]) for key in (*HEADLINE, "threshold")))
    console = Console()
    console.print(table)
    if report["robustness"]:
        sweep = Table(title="robustness", title_justify="left")
        for column in ("perturbation", "accuracy", "ROC-AUC"):
            sweep.add_column(column, justify="right")
        for row in report["robustness"]:
            sweep.add_row(row["perturbation"], _number(row["accuracy"]), _number(row["roc_auc"]))
        console.print(sweep)
    for item in report["unreadable"][:10]:
        console.print(f"[red]unreadable[/red] {item['path']}: {item['reason']}", highlight=False)
    if len(report["unreadable"]) > 10:
        console.print(f"[red]unreadable[/red]: {len(report['unreadable'])} files in all")
    console.print(f"report: {out_dir / 'report.md'}", highlight=False)


# ---------------------------------------------------------------------------------------------
# Entry point

CONF_DIR = Path(__file__).parent / "conf"


def register_configs() -> None:
    """Put conf/evaluate.yaml and the data, paths and hydra groups into Hydra's ConfigStore.

    The CLI composes from the ConfigStore rather than from conf/: conf/ also holds the training
    `model` group, and Hydra would read `model=<classifier.ts>` as a choice in that group. The
    nodes are the YAML files themselves, so nothing is duplicated. Only `main` calls this: in a
    process that also composes from conf/ (the tests), Hydra would treat each conf/data file as
    validated against the ConfigStore node of the same name, and refuse it.
    """
    store = ConfigStore.instance()
    store.store(name="evaluate", node=OmegaConf.load(CONF_DIR / "evaluate.yaml"))
    for group in ("data", "paths", "hydra"):
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            store.store(group=group, name=path.stem, node=OmegaConf.load(path))


def check_config(cfg: DictConfig) -> float | str:
    """Raise ConfigError naming the key for unusable values; return the threshold (float | auto)."""
    if not cfg.model:
        raise ConfigError("give the classifier: python -m fakeface.evaluate model=<classifier.ts>")
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
    if cfg.robustness:
        for name in cfg.perturbations:
            try:
                perturbation(str(name))
            except ValueError as err:
                raise ConfigError(f"perturbations: {err}") from None
    return threshold if threshold == "auto" else float(threshold)


def data_config(cfg: DictConfig) -> dict[str, Any]:
    """The data settings, with `split_file` set to the training run's split.csv where it applies.

    With data=folder and no data.split_file, a split.csv beside the model (what a training run
    writes next to its classifier.ts) is the split the model was trained with: reuse it
    (`run_split=false` re-splits instead). A split file names every image, so data.root is then
    only a label: if it is not a folder, the split file's root is shown instead.
    """
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if data.get("layout") == "folder" and not data.get("split_file") and cfg.run_split:
        beside = Path(cfg.model).expanduser().parent / "split.csv"
        if beside.is_file():
            log.info("data=folder: using the training run's split %s", beside)
            data["split_file"] = str(beside)
    root = data.get("root")
    if data.get("split_file") and (root in (None, "???") or not Path(root).expanduser().is_dir()):
        split_file = Path(data["split_file"]).expanduser()
        if not split_file.is_file():
            raise ConfigError(f"data.split_file={split_file}: no such file")
        first = pd.read_csv(split_file, usecols=["image_path"], nrows=1)["image_path"]
        data["root"] = str(Path(first.iloc[0]).parent.parent) if len(first) else str(root)
    return data


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score `cfg.split`, choose the threshold, compute the metrics, write the report files."""
    from hydra.utils import instantiate

    threshold = check_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    model, info = load_classifier(cfg.model, cfg.device)
    if POSITIVE not in info.class_names or len(info.class_names) != 2:
        raise ConfigError(
            f"{cfg.model} predicts {list(info.class_names)}; evaluate needs ['fake', <other>]"
        )
    names = (POSITIVE, next(c for c in info.class_names if c != POSITIVE))
    dtype = precision_dtype(cfg.precision, cfg.device)
    data = data_config(cfg)
    datamodule = instantiate(data, _convert_="all")
    datamodule.prepare_data()  # data=synthetic: generate on first use
    frame = datamodule.index(cfg.split)
    unknown = sorted(set(frame["class_name"]) - set(names))
    if unknown:
        raise ConfigError(
            f"split {cfg.split!r} has class folders {unknown} the model does not know ({list(names)})"
        )
    scoring = {
        "batch_size": cfg.batch_size, "tta": cfg.tta, "dtype": dtype,
        "num_workers": cfg.data.num_workers,
    }  # fmt: skip

    threshold_info: dict[str, Any] = {"mode": "fixed", "value": threshold}
    if threshold == "auto":
        val_split = datamodule.hparams.val_split
        if val_split == cfg.split:
            log.warning("threshold=auto tuned on split %r, the split being evaluated", val_split)
        val = datamodule.index(val_split)
        val_scores, _ = score_images(
            model, info, val["image_path"], progress=f"{val_split} (threshold)", **scoring
        )
        ok = ~np.isnan(val_scores[CLEAN])
        threshold, val_balanced = auto_threshold(
            val_scores[CLEAN][ok], (val["class_name"] == POSITIVE).to_numpy()[ok]
        )
        threshold_info = {
            "mode": "auto", "value": threshold, "val_split": val_split,
            "val_images": int(ok.sum()), "val_balanced_accuracy": val_balanced,
        }  # fmt: skip

    variants: dict[str, Perturbation | None] = {CLEAN: None}
    if cfg.robustness:
        variants |= {str(name): perturbation(str(name)) for name in cfg.perturbations}
    start = time.perf_counter()
    scores, errors = score_images(
        model, info, frame["image_path"], variants=variants, progress=cfg.split, **scoring
    )
    seconds = time.perf_counter() - start
    is_fake = (frame["class_name"] == POSITIVE).to_numpy()
    ok = ~np.isnan(scores[CLEAN])
    if not ok.any():
        raise ConfigError(f"none of the {len(frame)} images of split {cfg.split!r} is readable")
    results = {
        name: binary_metrics(p[ok], is_fake[ok], threshold, n_bins=cfg.ece_bins, names=names)
        for name, p in scores.items()
    }
    metrics = results[CLEAN]

    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = frame[["image_path", "class_name"]].copy()
    predictions["p_fake"] = scores[CLEAN]
    called_fake = scores[CLEAN].astype(np.float64) >= threshold  # as binary_metrics compares
    predictions["predicted"] = np.where(called_fake, names[0], names[1])
    predictions.loc[~ok, "predicted"] = ""
    for name in variants:
        if name != CLEAN:
            predictions[f"p_fake_{name}"] = scores[name]
    predictions["error"] = [errors.get(i, "") for i in range(len(frame))]
    predictions.to_csv(out_dir / "predictions.csv", index=False)

    p_ok, fake_ok = scores[CLEAN][ok], is_fake[ok]
    plot_roc(p_ok, fake_ok, metrics, out_dir / "roc.png")
    plot_reliability(p_ok, fake_ok, metrics, cfg.ece_bins, out_dir / "reliability.png")
    plot_confusion(metrics, cfg.split, out_dir / "confusion.png")
    robustness = [
        {"perturbation": name, **{k: r[k] for k in HEADLINE}} for name, r in results.items()
    ]
    if cfg.robustness:
        plot_robustness(robustness, out_dir / "robustness.png")

    report = {
        "model": {
            "path": str(cfg.model), "arch": info.arch, "image_size": info.image_size,
            "class_names": list(info.class_names), "source": info.source,
        },
        "data": {
            "root": data["root"], "layout": data.get("layout", "splits"), "split": cfg.split,
            "split_file": data.get("split_file"), "images": len(frame),
        },
        "threshold": threshold_info,
        "tta": bool(cfg.tta),
        "precision": str(dtype).removeprefix("torch.") if dtype is not None else "fp32",
        "ece_bins": cfg.ece_bins,
        "images_per_s": len(frame) / seconds if seconds else math.nan,
        "metrics": metrics,
        "robustness": robustness if cfg.robustness else [],
        "robustness_metrics": {k: v for k, v in results.items() if k != CLEAN},
        "unreadable": [{"path": frame["image_path"][i], "reason": e} for i, e in sorted(errors.items())],
    }  # fmt: skip
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.md").write_text(render_markdown(report))
    print_summary(report, out_dir)
    return report


@hydra.main(version_base="1.3", config_path=None, config_name="evaluate")
def _app(cfg: DictConfig) -> float:
    with one_line_errors():
        report = evaluate(cfg)
    return report["metrics"]["accuracy"]  # what a Hydra sweeper would read


def main() -> None:
    """CLI: evaluate, write the report into the run directory; one-line errors."""
    register_configs()
    _app()


if __name__ == "__main__":
    main()
