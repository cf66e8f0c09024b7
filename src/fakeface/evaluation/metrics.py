"""Binary detection metrics with `fake` as the positive class, and the auto threshold."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
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

from fakeface import CLASS_NAMES

# The class ROC-AUC / AP treat as positive ("fake"): the detector flags generated faces.
POSITIVE = CLASS_NAMES[0]
HEADLINE = ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "ece")


def binary_metrics(
    p_fake: ArrayLike,
    is_fake: ArrayLike,
    threshold: float = 0.5,
    *,
    n_bins: int = 15,
    names: tuple[str, str] = CLASS_NAMES,
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, ROC-AUC, AP, ECE and the confusion matrix.

    p_fake: N probabilities of the fake class; is_fake: N truths. Hard predictions are
    `p_fake >= threshold` (fake). ECE is the top-label calibration error (Guo et al. 2017):
    confidence max(p_fake, 1 - p_fake), `n_bins` equal-width bins over [0, 1]. ROC-AUC and AP
    are None when only one class is present. `names`: (positive, negative) class names.
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
    per_class, recall = _per_class(predicted, target, names)
    # Top-label ECE: torchmetrics' binary version bins p_fake against the fake rate instead.
    probs = torch.stack([p, 1 - p], dim=1)
    ece = multiclass_calibration_error(probs, target, num_classes=2, n_bins=n_bins, norm="l1")
    balanced = auc = ap = None
    if fake.any() and not fake.all():  # ranking and balanced accuracy need both classes
        balanced = float(recall.mean())
        auc = float(binary_auroc(p, fake.long()))
        ap = float(binary_average_precision(p, fake.long()))
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


def _per_class(
    predicted: torch.Tensor, target: torch.Tensor, names: tuple[str, str]
) -> tuple[dict[str, dict[str, Any]], torch.Tensor]:
    """{class: precision, recall, F1, support} in `names` order, and the recall vector."""
    two = {"num_classes": 2, "average": None}
    precision = multiclass_precision(predicted, target, **two)
    recall = multiclass_recall(predicted, target, **two)
    f1 = multiclass_f1_score(predicted, target, **two)
    per_class = {
        name: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int((target == k).sum()),
        }
        for k, name in enumerate(names)
    }
    return per_class, recall


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


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) (Guo et al. 2017).

    One scalar for all classes: the ranking and the argmax are unchanged, only the confidence
    moves. log T is optimised (L-BFGS) and T clamped to [0.05, 20]; an overconfident model gets T > 1.

    Args:
        logits: N x C float logits of a validation split (not the training images).
        labels: N class ids.
    """
    logits, labels = logits.detach().double(), labels.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().clamp(math.log(0.05), math.log(20.0)).exp())


def calibrate(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, Any]:
    """The temperature to export for these validation logits, with NLL and ECE before/after.

    T is fitted on the NLL (`fit_temperature`) and kept only if it also lowers the top-label
    ECE on the same images; otherwise the file keeps T = 1. NLL weighs a few confident errors
    heavily: for the label-smoothed detector it asked for T = 1.3-2.1, which made the majority of
    (correct) predictions underconfident and doubled the ECE.
    """
    fitted = fit_temperature(logits, labels)

    def scores(t: float) -> tuple[float, float]:
        z = logits.double() / t
        ece = multiclass_calibration_error(z.softmax(1), labels, logits.shape[1], n_bins=n_bins)
        return float(torch.nn.functional.cross_entropy(z, labels)), float(ece)

    (nll_before, ece_before), (nll_after, ece_after) = scores(1.0), scores(fitted)
    return {
        "temperature": fitted if ece_after <= ece_before else 1.0,
        "fitted_temperature": fitted, "images": len(labels),
        "nll_before": nll_before, "nll_after": nll_after,
        "ece_before": ece_before, "ece_after": ece_after,
    }  # fmt: skip


def uncalibrated(p_fake: ArrayLike, temperature: float) -> np.ndarray:
    """p_fake of a two-class file that divides its logits by `temperature`, as if it did not.

    log(p_fake / p_other) is (z_fake - z_other) / T, so multiplying it by T undoes the scaling.
    """
    p = np.clip(np.asarray(p_fake, dtype=np.float64), 1e-12, 1 - 1e-12)
    return 1.0 / (1.0 + np.exp(-temperature * np.log(p / (1 - p))))
