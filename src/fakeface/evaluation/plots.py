"""Every figure fakeface draws (training curves, evaluation plots, dataset grids), headless.

matplotlib is imported on first use, with the Agg backend: runs on servers have no display.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import binary_roc


def pyplot():  # noqa: ANN201 (the matplotlib.pyplot module)
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int = 100) -> None:
    """Write `fig` to `path` and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def plot_roc(p_fake: np.ndarray, is_fake: np.ndarray, metrics: dict[str, Any], path: Path) -> None:
    """ROC curve (positive = fake) with the operating point of the threshold."""
    plt = pyplot()
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
    save(fig, path)


def plot_reliability(
    p_fake: np.ndarray, is_fake: np.ndarray, metrics: dict[str, Any], n_bins: int, path: Path
) -> None:
    """Reliability diagram of the top-label confidence (the bins of the ECE) with bin counts."""
    plt = pyplot()
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
    save(fig, path)


def plot_robustness(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy and ROC-AUC for the clean images and each perturbation."""
    plt = pyplot()
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
    save(fig, path)


def confusion_figure(matrix: Any, classes: list[str] | tuple[str, ...], title: str):  # noqa: ANN201
    """A confusion matrix (rows true, columns predicted) as a heat map of counts and row shares.

    Returns the matplotlib Figure: evaluate saves it, training logs it to TensorBoard.
    """
    plt = pyplot()
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, cmap="Blues", vmin=0)
    for (row, col), count in np.ndenumerate(matrix):
        share = count / max(matrix[row].sum(), 1)
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(
            col, row, f"{count}\n{share:.1%}", ha="center", va="center", fontsize=12, color=colour
        )
    ticks = list(range(len(classes)))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=list(classes), yticklabels=list(classes))
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Accuracy and loss, train vs val, per epoch (the original's two plots); else every metric."""
    plt = pyplot()
    present = {key.split("/", 1)[1] for row in history for key in row if "/" in key}
    # Models without acc/loss (the DCGAN: d_loss, g_loss, d_real, d_fake) get one panel per metric.
    names = [name for name in ("acc", "loss") if name in present] or sorted(present)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    epochs = [row["epoch"] + 1 for row in history]
    for ax, name in zip(axes[0], names, strict=True):
        for stage in ("train", "val"):
            values = [row.get(f"{stage}/{name}", math.nan) for row in history]
            if all(math.isnan(v) for v in values):
                continue  # e.g. no val/d_loss: a GAN has no validation loop
            ax.plot(epochs, values, marker="o", label=stage)
        ax.set(xlabel="epoch", ylabel=name, title=f"{name}: train vs val")
        ax.grid(alpha=0.3)
        ax.legend()
    save(fig, path)


def plot_samples(frame: pd.DataFrame, path: Path, n: int = 9, seed: int = 0) -> None:
    """A grid of readable images, each titled with its class and split (the original's plot)."""
    from fakeface.preprocess import load_image

    plt = pyplot()
    readable = frame[frame["error"].isna()]
    picked = (
        readable.sample(min(n, len(readable)), random_state=seed) if len(readable) else readable
    )
    side = int(np.ceil(np.sqrt(n)))
    fig, axes = plt.subplots(side, side, figsize=(3 * side, 3 * side), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, picked.itertuples(), strict=False):
        ax.imshow(load_image(row.image_path))
        ax.set_title(f"{row.class_name} ({row.split})")
    save(fig, path, dpi=80)


def plot_sizes(frame: pd.DataFrame, path: Path) -> None:
    """Histograms of image side lengths (px) and file sizes (KiB)."""
    plt = pyplot()
    fig, (sides, files) = plt.subplots(1, 2, figsize=(10, 4))
    known = frame.dropna(subset=["width"])
    sides.hist([known["width"], known["height"]], bins=30, label=["width", "height"])
    sides.set(xlabel="pixels", ylabel="images", title="image sizes")
    sides.legend()
    files.hist(frame["bytes"].dropna() / 1024, bins=30)
    files.set(xlabel="KiB", ylabel="images", title="file sizes")
    save(fig, path, dpi=80)
