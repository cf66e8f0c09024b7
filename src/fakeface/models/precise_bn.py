"""Precise BatchNorm: running statistics re-estimated over training batches at fixed weights.

`model.precise_bn_share` / `model.precise_bn_batches` of CNNClassifier, run before each
validation (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm").
"""

from __future__ import annotations

import itertools
import logging
import math

import lightning as L
import torch
from torch import nn

from fakeface.errors import ConfigError

log = logging.getLogger(__name__)


def check_precise_bn(batches: int | None, share: float) -> None:
    """ConfigError unless `batches` is null or a whole number >= 0 and `share` is in [0, 1]."""
    if batches is not None and (
        isinstance(batches, bool) or not isinstance(batches, int) or batches < 0
    ):
        raise ConfigError(
            f"model.precise_bn_batches={batches!r}: give a whole number of training batches "
            "(e.g. 50; 0 = off), or null to use model.precise_bn_share"
        )
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ConfigError(
            f"model.precise_bn_share={share!r}: give a share of the epoch's training batches "
            "in [0, 1] (e.g. 0.02; 0 = off, 1 = the whole epoch)"
        )


def legacy_precise_bn(setting: int | float) -> tuple[int | None, float]:
    """(precise_bn_batches, precise_bn_share) for the former `bn_recalibration_batches`, where
    an int counted batches and a float was a share (older checkpoints carry it)."""
    log.warning(
        "model.bn_recalibration_batches=%r is the former spelling: use model.precise_bn_batches"
        " (a number of batches) or model.precise_bn_share (a share of the epoch)",
        setting,
    )
    if isinstance(setting, float):
        return None, setting
    return setting, 0.0


# A share never averages over fewer batches than this (or than the whole epoch, if shorter):
# statistics from a few hundred images are noisy enough to swing the eval-mode accuracy.
MIN_PRECISE_BN_BATCHES = 16


def precise_bn_batches(batches: int | None, share: float, epoch_batches: float) -> int:
    """Training batches precise BN averages over: `batches` if set; else `share` of the epoch
    rounded up, at least MIN_PRECISE_BN_BATCHES (or the whole epoch if shorter; 50 if its
    length is unknown); 0 when both are 0."""
    if batches is not None:
        return batches
    if share == 0:
        return 0
    if not math.isfinite(epoch_batches):
        return 50
    return min(int(epoch_batches), max(MIN_PRECISE_BN_BATCHES, math.ceil(share * epoch_batches)))


@torch.no_grad()
def recalibrate_batchnorm(
    module: L.LightningModule, trainer: L.Trainer, batches: int, step_size: int | None = None
) -> None:
    """Set every BatchNorm's running mean/var to their average over `batches` training batches
    (of `step_size` images each if given: the loader's batches split as the training step
    splits them, so the statistics are those of the same run at data.batch_size=step_size).

    Why: the original CNN puts ReLU before BatchNorm, and its running averages trail the weights
    by a few dozen steps; the model then separates classes only within a batch, and its eval-mode
    accuracy dropped to 50% at random epochs. Statistics taken at the final weights, with dropout
    off as at inference, fix that for under 1% of an epoch's compute on 100k images.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if batches <= 0 or not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
        m.train()  # batch statistics for BN only; the rest (dropout) stays in eval mode
    try:
        images = (
            x
            for batch in trainer.train_dataloader
            for x in (batch[0].split(step_size) if step_size else (batch[0],))
        )
        with trainer.precision_plugin.forward_context():
            for x in itertools.islice(images, batches):  # draws no loader batch beyond these
                module(x.to(module.device, non_blocking=True))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
            m.eval()
    if trainer.world_size > 1:  # every rank saw its own shard: agree on one set of statistics
        for m in norms:
            m.running_mean.copy_(trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
            m.running_var.copy_(trainer.strategy.reduce(m.running_var, reduce_op="mean"))
