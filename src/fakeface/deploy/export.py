"""Export a trained classifier (or an ensemble) to TorchScript and/or ONNX, contract inside.

    python -m fakeface.export ckpt=<cnn.ckpt>      # -> <run dir>/classifier.ts (or out=<folder>)
    python -m fakeface.export ckpt=<cnn.ckpt> format=[ts,onnx,int8] calib=<run>/split.csv
    python -m fakeface.export "members=[<a.ts>,<b.ts>,<c.ts>]"   # one file: their mean

Each file takes float32 NCHW RGB in [0, 1] at the training image size (any batch size) and
returns probabilities [p_fake, p_real]; `fakeface.json` inside it says so (see
`fakeface.deploy.modelfile`; ONNX: `fakeface.deploy.onnxfile`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fakeface
from fakeface.data.index import source_name
from fakeface.deploy.modelfile import (
    META_FILE,
    ClassifierInfo,
    load_classifier,
    quiet_torchscript,
)
from fakeface.errors import ConfigError, ModelFileError


class Probabilities(nn.Module):
    """A logits network, its calibration temperature, then a softmax in fp32: the file's forward."""

    def __init__(self, net: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.temperature = float(temperature)  # a constant in the traced graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: N x 3 x S x S in [0, 1] -> N x classes probabilities; .float() keeps the softmax fp32
        # when the caller runs the file under bf16 autocast.
        return torch.softmax(self.net(x).float() / self.temperature, dim=1)


def export_classifier(
    model: nn.Module,
    out_path: str | Path,
    image_size: int | None = None,
    *,
    source: str | Path = "",
    arch: str | None = None,
    class_names: Sequence[str] | None = None,
    temperature: float = 1.0,
    calibration: dict | None = None,
    **release: Any,
) -> Path:
    """Write `model` (a CNNClassifier or a plain logits net) to a fakeface classifier file:
    TorchScript for a `.ts` path, ONNX (fp32) for a `.onnx` path.

    The model is copied, so the caller's module keeps its device, dtype and training mode.

    Args:
        model: a LightningModule with `.net` and `.hparams` (CNNClassifier), or any nn.Module
            mapping N x 3 x S x S in [0, 1] to N x classes logits.
        out_path: the `.ts` or `.onnx` file to write (parent folders are created).
        image_size: input side S; default `model.hparams.image_size`.
        source: the checkpoint it comes from (recorded in the metadata).
        arch: architecture name; default `model.hparams.arch`, else the class name.
        class_names: output order; default `model.class_names`, else fakeface.CLASS_NAMES.
        temperature: the file divides the logits by it before the softmax (`fit_temperature`);
            1 leaves them as trained.
        calibration: how the temperature was fitted, for the metadata.
        release: ClassifierInfo's `trained_on` (`describe_training_data`), `name`, and the
            operating point `threshold` (p_fake >= it: fake) and `unsure` ((low, high): p_fake
            in [low, high) is "unsure").
    """
    if not 0 < temperature < float("inf"):
        raise ConfigError(f"temperature={temperature}: use a positive number (1 = uncalibrated)")
    hparams = getattr(model, "hparams", {})
    net = getattr(model, "net", model)  # CNNClassifier keeps its network in .net
    image_size = image_size or hparams.get("image_size")
    if not image_size:
        raise ModelFileError("image_size is unknown: pass export_classifier(..., image_size=128)")
    info = ClassifierInfo(
        image_size=int(image_size),
        class_names=tuple(class_names or getattr(model, "class_names", fakeface.CLASS_NAMES)),
        arch=arch or hparams.get("arch", type(net).__name__),
        source=str(source),
        torch_version=torch.__version__,
        fakeface_version=fakeface.__version__,
        temperature=float(temperature),
        calibration=dict(calibration or {}),
        **release_fields(release),
    )
    wrapper = Probabilities(copy.deepcopy(net).to("cpu", torch.float32), temperature).eval()
    return write_file(wrapper, Path(out_path), info)


def write_file(wrapper: nn.Module, out_path: Path, info: ClassifierInfo) -> Path:
    """Save the probabilities module by the path's suffix (.ts or .onnx), then check it."""
    if out_path.suffix not in (".ts", ".onnx"):
        raise ConfigError(f"{out_path}: name the file .ts (TorchScript) or .onnx (ONNX)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".onnx":
        from fakeface.deploy.onnxfile import save_onnx

        save_onnx(wrapper, out_path, info.image_size, info.to_json())
    else:
        save_torchscript(wrapper, out_path, info)
    check_file(out_path, wrapper, info.image_size)
    return out_path


def release_fields(release: dict[str, Any]) -> dict[str, Any]:
    """export_classifier's `release` keywords, checked: ConfigError for a bad operating point
    (0 <= low <= threshold <= high <= 1; an empty unsure band is fine)."""
    unknown = set(release) - {"trained_on", "name", "threshold", "unsure"}
    if unknown:
        raise TypeError(f"export_classifier() got unexpected arguments {sorted(unknown)}")
    threshold = float(release.get("threshold", 0.5))
    unsure = tuple(float(v) for v in release.get("unsure", ()))
    band_ok = not unsure or (len(unsure) == 2 and 0 <= unsure[0] <= threshold <= unsure[1] <= 1)
    if not 0 <= threshold <= 1 or not band_ok:
        raise ConfigError(
            f"threshold={threshold}, unsure={list(unsure)}: use 0 <= low <= threshold <= high <= 1"
        )
    return release | {"threshold": threshold, "unsure": unsure}


def describe_training_data(data: dict) -> dict:
    """The data settings of a run (a DataModule's hyperparameters) -> ClassifierInfo.trained_on."""
    roots = data.get("root") or []
    roots = [roots] if isinstance(roots, str) else list(roots)
    names = [source_name(r) for r in roots]
    described = {"synthetic": data.get("synthetic") is not None, "folders": names}
    if data.get("face_crop"):  # the model expects face crops: predict detect=true, serve
        crop = data["face_crop"]
        described["face_crop"] = {
            "detector": crop["detector"].get("kind"),
            "margin": crop["margin"],
        }
    return described


def save_torchscript(wrapper: nn.Module, out_path: Path, info: ClassifierInfo) -> None:
    """Trace `wrapper` and save it with the metadata, via a .partial file (never half-written)."""
    partial = out_path.with_name(out_path.name + ".partial")
    example = torch.rand(2, 3, info.image_size, info.image_size)
    with quiet_torchscript(), torch.no_grad():
        traced = torch.jit.trace(wrapper, example)
        torch.jit.save(traced, str(partial), _extra_files={META_FILE: info.to_json()})
    partial.replace(out_path)


def check_file(path: Path, wrapper: nn.Module, image_size: int) -> None:
    """Read the file back and check it on a batch of another size against the eager model."""
    loaded, _ = load_classifier(path)
    generator = torch.Generator().manual_seed(0)
    check = torch.rand(3, 3, image_size, image_size, generator=generator)
    with torch.no_grad():
        expected, got = wrapper(check), loaded(check)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-5):
        path.unlink()
        raise ModelFileError(
            f"the exported {path.name} does not reproduce the eager model (max difference "
            f"{(got - expected).abs().max():.2e}); it may have input-dependent control flow"
        )


def load_checkpoint(ckpt: str | Path) -> nn.Module:
    """A CNNClassifier from its training checkpoint, on the CPU (no Hydra needed)."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise ModelFileError(f"checkpoint {ckpt} not found (give ckpt=<path to a CNN .ckpt>)")
    if ckpt.suffix in (".ts", ".onnx"):
        raise ModelFileError(f"{ckpt} is already an exported model; give the training .ckpt")
    from fakeface.models.classifier import CNNClassifier  # Lightning: only when exporting

    try:
        return CNNClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    except Exception as err:  # any failure here means "not a CNNClassifier checkpoint"
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise ModelFileError(
            f"{ckpt} is not a CNNClassifier checkpoint ({type(err).__name__}: {first}); "
            "export the .ckpt of a `experiment=cnn` run"
        ) from err


def export_checkpoint(
    ckpt: str | Path, out_path: str | Path = "classifier.ts", temperature: float = 1.0
) -> Path:
    """Load a CNNClassifier checkpoint and export it to `out_path` (.ts or .onnx)."""
    module = load_checkpoint(ckpt)
    return export_classifier(module, out_path, source=Path(ckpt).resolve(), temperature=temperature)


class Ensemble(nn.Module):
    """Several exported classifiers as one logits network: log of their mean probabilities.

    The export's softmax turns these logits back into exactly the mean of the members'
    probabilities (each member keeps its own calibration temperature).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([member(x).float() for member in self.members]).mean(0)
        return mean.clamp_min(1e-12).log()


def export_ensemble(members: Sequence[str | Path], out_path: str | Path) -> Path:
    """Average exported classifiers (same image size and classes) into one file at `out_path`."""
    if len(members) < 2:
        raise ConfigError(
            f"members={list(members)}: an ensemble needs at least two classifier files"
        )
    loaded = [load_classifier(path) for path in members]
    for path, (model, _) in zip(members, loaded, strict=True):
        if not isinstance(model, torch.jit.ScriptModule):
            raise ConfigError(
                f"members: {path} is not a TorchScript file; an ensemble averages .ts files"
            )
    first = loaded[0][1]
    for path, (_, info) in zip(members, loaded, strict=True):
        if (info.image_size, info.class_names) != (first.image_size, first.class_names):
            raise ConfigError(
                f"members: {path} takes {info.image_size} px -> {list(info.class_names)}, "
                f"{members[0]} takes {first.image_size} px -> {list(first.class_names)}; "
                "an ensemble needs members with the same input size and classes"
            )
    archs = sorted({info.arch for _, info in loaded})
    return export_classifier(
        Ensemble([model for model, _ in loaded]),
        out_path,
        first.image_size,
        source=", ".join(str(Path(path).resolve()) for path in members),
        arch=f"ensemble of {len(members)} ({', '.join(archs)})",
        class_names=first.class_names,
        calibration={"members": [{"temperature": info.temperature} for _, info in loaded]},
    )
