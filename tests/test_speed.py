"""The fast training step: same losses as the plain recipe, compile/CUDA-graph fallbacks, precision."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from conftest import quiet_trainer
from fakeface.deploy.modelfile import fast_dtype, precision_dtype
from fakeface.errors import ConfigError
from fakeface.models import classifier, steps
from fakeface.models.classifier import CNNClassifier
from fakeface.precision import resolve_precision

STEPS, BATCH, SIZE = 6, 8, 32


def _data(seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.rand(STEPS * BATCH, 3, SIZE, SIZE, generator=g), torch.arange(STEPS * BATCH) % 2
    )


class _Losses(L.Callback):
    """Every step's loss, and the same dropout draws for every run (seeded at the first step)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == 0:
            torch.manual_seed(1)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.losses.append(float(outputs["loss"]))


def _fit(model: CNNClassifier, accelerator: str = "cpu") -> tuple[list[float], L.Trainer]:
    losses = _Losses()
    trainer = quiet_trainer(
        accelerator, max_epochs=1, limit_val_batches=0, log_every_n_steps=1, callbacks=[losses]
    )
    trainer.fit(model, DataLoader(_data(), batch_size=BATCH))
    return losses.losses, trainer


def _fit_warnings(
    model: CNNClassifier, caplog: pytest.LogCaptureFixture, accelerator: str = "cpu"
) -> tuple[list[float], list[str]]:
    """_fit's losses, and the model.compile warnings the run logged."""
    with caplog.at_level(logging.WARNING, logger=steps.__name__):
        losses, _ = _fit(model, accelerator)
    return losses, [r.getMessage() for r in caplog.records if "model.compile" in r.getMessage()]


def _model(dropout: bool = True, **kwargs: object) -> CNNClassifier:
    torch.manual_seed(0)
    model = CNNClassifier(**{"image_size": SIZE, "scheduler": "none"} | kwargs)
    if not dropout:  # compiled code draws its dropout masks from another generator than eager
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    return model


@pytest.mark.slow
def test_training_step_equals_the_plain_sgd_recipe() -> None:
    """The step (one fused/foreach SGD update, no per-step sync) gives the losses of a plain
    PyTorch loop with the per-parameter SGD of the original recipe."""
    model = _model()
    reference = _model()
    pairs = zip(model.parameters(), reference.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    losses, trainer = _fit(model)
    optimizer = trainer.optimizers[0]
    assert optimizer.defaults["foreach"] is True  # a CPU: multi-tensor ops (fused on CUDA)

    sgd = torch.optim.SGD(reference.parameters(), lr=0.01, foreach=False)
    reference.train()
    batches = list(DataLoader(_data(), batch_size=BATCH))
    torch.manual_seed(1)
    expected = []
    for x, y in batches:
        loss = F.cross_entropy(reference(x), y)
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        expected.append(loss.item())
    assert losses == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert losses[-1] != losses[0]  # it trained
    # the same metric keys as before; the step loss stays out of the progress bar (no sync)
    assert {"train/loss_step", "train/loss_epoch", "train/acc"} <= set(trainer.logged_metrics)
    assert "train/loss_step" not in trainer.progress_bar_metrics
    assert set(model.state_dict()) == set(reference.state_dict())  # checkpoints: same keys


def _fit_epochs(
    model: CNNClassifier, batch_size: int, epochs: int, accelerator: str = "cpu"
) -> L.Trainer:
    """`epochs` epochs on _data() in loader batches of `batch_size`, validating on _data(1)."""
    torch.manual_seed(1)  # the dropout draws
    trainer = quiet_trainer(accelerator, max_epochs=epochs, num_sanity_val_steps=0)
    val = DataLoader(_data(1), batch_size=BATCH)
    trainer.fit(model, DataLoader(_data(), batch_size=batch_size), val)
    return trainer


@pytest.mark.slow
def test_split_steps_are_the_small_batch_steps_and_the_plateau_still_steps() -> None:
    """model.step_batch_size: loader batches of 3 x BATCH, each split into optimizer steps of
    BATCH, train exactly as loader batches of BATCH: same weights, BatchNorm statistics (precise
    BN splits as training does), optimizer steps and plateau decisions."""
    # precise BN over whole epochs; no val/loss drop counts (min_delta 1): the lr drops each epoch
    settings = {"scheduler": "plateau", "plateau_patience": 0, "plateau_min_delta": 1.0}
    small = _model(**settings)
    small_trainer = _fit_epochs(small, BATCH, epochs=3)
    split = _model(step_batch_size=BATCH, **settings)
    assert not split.automatic_optimization
    split_trainer = _fit_epochs(split, 3 * BATCH, epochs=3)
    assert split_trainer.global_step == small_trainer.global_step == 3 * STEPS
    for a, b in zip(small.state_dict().values(), split.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    lrs = [t.optimizers[0].param_groups[0]["lr"] for t in (small_trainer, split_trainer)]
    assert lrs[0] == lrs[1] < 0.01  # and the plateau did cut it
    schedulers = [t.lr_scheduler_configs[0].scheduler for t in (small_trainer, split_trainer)]
    assert schedulers[0].state_dict() == schedulers[1].state_dict()
    # the loader batch's mean loss and accuracy, logged as before
    assert {"train/loss_step", "train/loss_epoch", "train/acc"} <= set(split_trainer.logged_metrics)


@pytest.mark.slow
def test_split_steps_advance_a_per_step_schedule_once_per_loader_batch() -> None:
    model = _model(step_batch_size=BATCH, scheduler="onecycle")
    trainer = _fit_epochs(model, 2 * BATCH, epochs=2)  # OneCycleLR refuses a step past its end
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    # 2 epochs x 3 loader batches of 2 x BATCH
    assert scheduler.last_epoch == trainer.estimated_stepping_batches == 2 * (STEPS // 2)
    assert trainer.global_step == 2 * STEPS  # optimizer steps


@pytest.mark.parametrize("bad", [0, -32, 1.5, True, "32"])
def test_step_batch_size_must_be_a_positive_whole_number(bad: object) -> None:
    with pytest.raises(ConfigError, match="model.step_batch_size"):
        CNNClassifier(step_batch_size=bad)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reduce-overhead", "cuda-graphs"])
def test_graph_modes_without_cuda_train_eagerly_and_say_so_once(
    caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    eager, _ = _fit(_model())
    graphs, warnings = _fit_warnings(_model(compile=mode), caplog)
    assert len(warnings) == 1
    assert f"model.compile={mode} captures CUDA graphs" in warnings[0]
    assert "training eagerly" in warnings[0]
    assert graphs == eager


@pytest.mark.slow
def test_a_failed_compile_falls_back_to_eager_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fn: object, **kwargs: object) -> object:
        def run(*args: object) -> None:
            raise RuntimeError("no C++ compiler here\nmore detail")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    eager, _ = _fit(_model())
    fallback, warnings = _fit_warnings(_model(compile="default"), caplog)
    assert warnings == [
        "model.compile=default failed (RuntimeError: no C++ compiler here); training eagerly "
        "from here"
    ]
    assert fallback == eager


@pytest.mark.slow
def test_compiled_step_is_traced_and_gives_the_eager_losses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Dynamo's eager backend: the step goes through torch.compile's tracing without the C++
    # toolchain (inductor on 2 CPU cores would take minutes)
    calls = []
    real = torch.compile

    def traced(fn: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real(fn, backend="eager", dynamic=kwargs.get("dynamic"))

    monkeypatch.setattr(torch, "compile", traced)
    torch._dynamo.reset()
    eager, _ = _fit(_model())
    compiled, _ = _fit(_model(compile="default"))
    assert calls == [{"mode": "default", "dynamic": False}]
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_split_steps_through_the_compiled_step_train_as_eager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """model.step_batch_size with model.compile: each split step goes through the traced step
    (Dynamo's eager backend, as above) and the manual backward; the weights match eager."""
    real = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda fn, **kw: real(fn, backend="eager", dynamic=kw.get("dynamic"))
    )
    torch._dynamo.reset()
    eager = _model(dropout=False, step_batch_size=BATCH)
    _fit_epochs(eager, 3 * BATCH, epochs=1)
    compiled = _model(dropout=False, step_batch_size=BATCH, compile="default")
    _fit_epochs(compiled, 3 * BATCH, epochs=1)
    assert isinstance(compiled._train_outputs, steps.CompiledOrEager)
    assert compiled._train_outputs.compiled is not None  # no fallback happened
    for a, b in zip(eager.state_dict().values(), compiled.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_failed_compiled_backward_redoes_the_step_eagerly(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Boom(torch.autograd.Function):
        @staticmethod
        def forward(ctx: object, t: torch.Tensor) -> torch.Tensor:
            return t.clone()

        @staticmethod
        def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("CUDA driver error: invalid argument")

    def broken(fn: torch.nn.Module, **kwargs: object) -> object:
        def run(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            loss, acc = fn(x, y)
            return Boom.apply(loss), acc  # the forward works, its backward fails

        return run

    monkeypatch.setattr(torch, "compile", broken)
    eager, _ = _fit(_model(dropout=False))
    fallback, warnings = _fit_warnings(_model(dropout=False, compile="default"), caplog)
    assert warnings == [
        "model.compile=default failed (RuntimeError: CUDA driver error: invalid argument); "
        "training eagerly from here"
    ]
    assert fallback == pytest.approx(eager, rel=1e-6)  # the first step was redone, not lost


class _StandInCapture:
    """torch.cuda.make_graphed_callables without CUDA: what it does besides capturing, i.e.
    three warm-up passes in training mode on the sample batch (which move BatchNorm's running
    statistics), then a callable that runs the module on each batch."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.captured, self.replayed = fail, [], []

    def __call__(self, module: torch.nn.Module, sample: tuple[torch.Tensor, ...]) -> object:
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\ndetail")
        assert not torch.is_autocast_cache_enabled()  # the real one refuses autocast's cache
        self.captured.append(sample[0].shape)
        for _ in range(3):
            module(*sample)

        def replay(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.replayed.append(x.shape)
            return module(x, y)

        return replay


def _graphed_model(
    monkeypatch: pytest.MonkeyPatch, capture: _StandInCapture, **kwargs: object
) -> CNNClassifier:
    """A model whose step is a GraphedStep, as on a GPU, capturing with `capture`."""
    real = classifier.training_outputs
    monkeypatch.setattr(
        classifier,
        "training_outputs",
        lambda net, mode, device, **kw: real(net, mode, torch.device("cuda"), **kw),
    )
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", capture)
    return _model(dropout=False, compile="cuda-graphs", **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("step_batch_size", [None, BATCH])
def test_captured_step_trains_as_eager(
    monkeypatch: pytest.MonkeyPatch, step_batch_size: int | None
) -> None:
    """model.compile=cuda-graphs around a stand-in capture: the same weights and BatchNorm
    statistics as eager (the capture's warm-up passes are undone), the epoch's shorter last batch
    runs eagerly, and the split steps replay too."""
    batch = 3 * BATCH - 2 if step_batch_size is None else 3 * BATCH  # 22: a last batch of 4
    # no precise BN: it would re-estimate the running statistics the warm-up moved
    settings = {"step_batch_size": step_batch_size, "precise_bn_share": 0}
    eager = _model(dropout=False, **settings)
    _fit_epochs(eager, batch, epochs=2)
    capture = _StandInCapture()
    graphed = _graphed_model(monkeypatch, capture, **settings)
    _fit_epochs(graphed, batch, epochs=2)
    assert isinstance(graphed._train_outputs, steps.GraphedStep)
    step = step_batch_size or batch
    assert capture.captured == [torch.Size([step, 3, SIZE, SIZE])]
    full_steps = 2 * (STEPS * BATCH // step)  # per epoch: 2 of 22 (the last 4: eager), or 6 of 8
    assert capture.replayed == [capture.captured[0]] * full_steps
    for a, b in zip(eager.state_dict().values(), graphed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_failed_capture_trains_eagerly_and_says_so_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    eager, _ = _fit(_model(dropout=False))
    model = _graphed_model(monkeypatch, _StandInCapture(fail=True))
    fallback, warnings = _fit_warnings(model, caplog)
    assert warnings == [
        "model.compile=cuda-graphs: capturing the step failed (RuntimeError: operation not "
        "permitted when stream is capturing); training eagerly"
    ]
    assert fallback == eager


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("mode", ["reduce-overhead", "cuda-graphs"])
def test_cuda_graph_step_gives_the_eager_losses(
    caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    torch._dynamo.reset()
    eager, trainer = _fit(_model(dropout=False), "gpu")
    assert trainer.optimizers[0].defaults["fused"] is True
    graphs, warnings = _fit_warnings(_model(dropout=False, compile=mode), caplog, "gpu")
    assert warnings == []
    # cuDNN/inductor kernels differ from eager ones in the last bits
    assert graphs == pytest.approx(eager, rel=2e-3, abs=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("mode", ["reduce-overhead", "cuda-graphs"])
def test_cuda_graph_split_steps_train_as_eager_small_batches(mode: str) -> None:
    """The GPU recipe: loader batches of 3 x BATCH split into CUDA-graph steps of BATCH."""
    torch._dynamo.reset()
    eager = _model(dropout=False)
    _fit_epochs(eager, BATCH, epochs=2, accelerator="gpu")
    graphs = _model(dropout=False, compile=mode, step_batch_size=BATCH)
    trainer = _fit_epochs(graphs, 3 * BATCH, epochs=2, accelerator="gpu")
    assert trainer.global_step == 2 * STEPS
    for a, b in zip(eager.state_dict().values(), graphs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)  # cuDNN vs inductor kernels


def test_unknown_compile_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model.compile='max'"):
        CNNClassifier(compile="max")


def test_precision_auto_is_fp32_on_a_cpu_without_native_bf16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)  # an AVX2-only CPU
    assert resolve_precision("auto", "auto") == "32-true"
    assert fast_dtype("cpu") is None and precision_dtype("auto", "cpu") is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert resolve_precision("auto", "auto") == "bf16-mixed"
    assert fast_dtype("cpu") is torch.bfloat16
