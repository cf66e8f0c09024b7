"""The classifier's training step as a callable (x, y) -> (loss, acc), run eagerly, compiled
(torch.compile) or replayed from CUDA graphs: what `model.compile` chooses."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

COMPILE_MODES = (None, "default", "reduce-overhead", "cuda-graphs")


class TrainOutputs(nn.Module):
    """The training step's tensor work, what `model.compile` compiles: (x, y) -> (loss, acc).

    Holds the classifier's own `net` (shared, not copied) and is kept out of the classifier's
    submodules, so checkpoints hold the same keys with or without compilation.
    """

    def __init__(self, net: nn.Module, label_smoothing: float, channels_last: bool) -> None:
        super().__init__()
        self.net, self.label_smoothing, self.channels_last = net, label_smoothing, channels_last

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: N x 3 x H x W in [0, 1], y: N class ids -> mean cross-entropy, batch accuracy
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(1) == y).float().mean()
        return loss, acc


def first_line(err: Exception) -> str:
    """`Type: first line of the message` (compiler and CUDA errors run to pages)."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300] if text else ''}"


class CompiledOrEager:
    """Calls the compiled step; if compiling or running it fails (forward here, backward in
    `CNNClassifier.backward`), logs once and uses the eager step from then on. A genuine error
    then comes back from the eager step, unchanged."""

    def __init__(self, compiled: Callable, eager: nn.Module, mode: str) -> None:
        self.compiled: Callable | None = compiled
        self.eager, self.mode = eager, mode
        self.last: tuple[torch.Tensor, ...] = ()  # (x, y, loss) of the last compiled call

    def fail(self, err: Exception) -> None:
        log.warning(
            "model.compile=%s failed (%s); training eagerly from here", self.mode, first_line(err)
        )
        self.compiled, self.last = None, ()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.compiled is not None:
            if self.mode == "reduce-overhead":  # a new iteration: CUDA-graph outputs may be reused
                torch.compiler.cudagraph_mark_step_begin()
            try:
                loss, acc = self.compiled(x, y)
                self.last = (x, y, loss)
                return loss, acc
            except Exception as err:  # noqa: BLE001 (any compiler failure: train on, eagerly)
                self.fail(err)
        return self.eager(x, y)


class GraphedStep:
    """model.compile=cuda-graphs: the step's forward and backward replayed from two CUDA graphs
    (`torch.cuda.make_graphed_callables`), captured on the first batch, without torch.compile.

    Each step is then two replays and the input copies, with less Python around them than
    `reduce-overhead` spends on Dynamo's guards and its graph bookkeeping (not yet measured on a
    GPU). Batches of another shape (an epoch's last, shorter one) run eagerly. The optimizer step
    stays eager (one fused kernel), so Lightning's optimization, schedules and step counting are
    untouched. The backward graph writes the same gradient buffers at every replay, so gradients
    must be set to None before each step (zero_grad's default; no accumulation). If capturing
    fails, that is logged once and the run trains eagerly.
    """

    def __init__(self, eager: TrainOutputs) -> None:
        self.eager = eager
        self.graphed: Callable | None = None
        self.shape: torch.Size | None = None  # the captured batch shape; None: not captured yet

    def capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.shape = x.shape
        # The capture's warm-up passes run the net in training mode: keep BatchNorm's running
        # statistics as they were, so the first replay is the run's first update of them.
        saved = [b.clone() for b in self.eager.buffers()]
        # A module of its own to graph (make_graphed_callables patches its forward): the eager
        # one stays as it is for the batches of other shapes.
        module = TrainOutputs(self.eager.net, self.eager.label_smoothing, self.eager.channels_last)
        try:  # capture needs autocast's weight cache off; the replays need no autocast at all
            with torch.autocast(
                "cuda",
                dtype=torch.get_autocast_dtype("cuda"),
                enabled=torch.is_autocast_enabled("cuda"),
                cache_enabled=False,
            ):
                self.graphed = torch.cuda.make_graphed_callables(module, (x.clone(), y.clone()))
        except Exception as err:  # noqa: BLE001 (any capture failure: train on, eagerly)
            log.warning(
                "model.compile=cuda-graphs: capturing the step failed (%s); training eagerly",
                first_line(err),
            )
        with torch.no_grad():
            for buffer, value in zip(self.eager.buffers(), saved, strict=True):
                buffer.copy_(value)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shape is None:
            self.capture(x, y)
        if self.graphed is None or x.shape != self.shape:
            return self.eager(x, y)
        loss, acc = self.graphed(x, y)
        # The graph's own outputs change at the next replay. (acc is a graph output too, so
        # autograd marks it as differentiable: detach it, as the eager step's is.)
        return loss.clone(), acc.detach().clone()


def training_outputs(net: nn.Module, mode: str | None, device: torch.device, **kwargs) -> Callable:
    """The training step's (x, y) -> (loss, acc) for `model.compile=mode` on `device`.

    `reduce-overhead` captures the forward and backward in CUDA graphs (torch.compile's
    cudagraph trees), `cuda-graphs` captures them without compiling (`GraphedStep`): one launch
    instead of dozens per step, which is what bounds a small CNN at batch 32 on a GPU. Without
    CUDA both fall back to eager, logged once.
    """
    eager = TrainOutputs(net, **kwargs)
    if mode is None:
        return eager
    if mode in ("reduce-overhead", "cuda-graphs") and device.type != "cuda":
        log.warning(
            "model.compile=%s captures CUDA graphs and this run is on %s: training eagerly "
            "(use model.compile=default to compile without CUDA graphs)",
            mode, device.type,
        )  # fmt: skip
        return eager
    if mode == "cuda-graphs":
        return GraphedStep(eager)
    # dynamic=False: one graph per batch shape (the epoch's last, shorter batch gets its own)
    return CompiledOrEager(torch.compile(eager, mode=mode, dynamic=False), eager, mode)
