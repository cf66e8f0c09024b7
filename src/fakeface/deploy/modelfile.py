"""The exported classifier file (TorchScript or ONNX, with fakeface metadata): load it, run it fast.

Only torch, the stdlib and two light fakeface modules (precision, cli) here: predict and the
real-time loop import this module, and neither may pull in Lightning.
"""

from __future__ import annotations

import json
import logging
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from fakeface import CLASS_NAMES
from fakeface.errors import ConfigError, ModelFileError
from fakeface.precision import bf16_supported

log = logging.getLogger(__name__)

FORMAT = "fakeface-classifier"
FORMAT_VERSION = 1
META_FILE = "fakeface.json"  # the name of the metadata entry in TorchScript's _extra_files


@contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch's "`torch.jit.*` is deprecated" FutureWarnings (torch 2.14) in this block.

    TorchScript is still the one format that loads without Python code or Lightning;
    `torch.export` is the documented next step. Users never need to see that warning.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.\w+.* deprecated", category=FutureWarning
        )
        yield


@dataclass(frozen=True)
class ClassifierInfo:
    """The contract carried inside an exported classifier file (`fakeface.json`)."""

    image_size: int
    class_names: tuple[str, ...] = CLASS_NAMES
    arch: str = "seed_cnn"
    source: str = ""  # the checkpoint it was exported from
    scaling: str = "1/255"
    input: str = "RGB float32 NCHW [0,1]"
    output: str = "probabilities N x len(class_names) (softmax of logits / temperature)"
    temperature: float = 1.0  # fitted on the validation split (calibration); 1 = none
    calibration: dict = field(default_factory=dict)  # how it was fitted: split, images, ECE, NLL
    quantization: dict = field(default_factory=dict)  # int8 files: how, on which images; else {}
    name: str = ""  # a released model's name, e.g. fakeface-detector-1
    # what it learned from: {"synthetic": bool, "folders": [...]}; {} = not recorded (older files)
    trained_on: dict = field(default_factory=dict)
    threshold: float = 0.5  # p_fake at or above which a face is called fake
    unsure: tuple[float, ...] = ()  # (low, high): p_fake in [low, high) is "unsure"; () = none
    torch_version: str = ""
    fakeface_version: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """Metadata as indented JSON (lists for tuples)."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, path: str | Path) -> ClassifierInfo:
        """Parse and check the metadata of `path`; raise ModelFileError if it is not ours."""
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelFileError(
                f"{path}: its {META_FILE} is not valid JSON ({err}); re-export it"
            ) from err
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ModelFileError(
                f"{path} is a model file but not a fakeface classifier (no '{FORMAT}' "
                f"marker in {META_FILE}); export one with: python -m fakeface.export ckpt=<cnn.ckpt>"
            )
        if raw.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(
                f"{path} has fakeface format version {raw.get('format_version')}, this fakeface "
                f"reads version {FORMAT_VERSION}; re-export it with this version"
            )
        known = {name: raw[name] for name in cls.__dataclass_fields__ if name in raw}
        try:
            info = cls(**known)
            return replace(
                info,
                image_size=int(info.image_size),
                class_names=tuple(info.class_names),
                temperature=float(info.temperature),
                threshold=float(info.threshold),
                unsure=tuple(float(v) for v in info.unsure),
            )
        except (TypeError, ValueError) as err:
            raise ModelFileError(
                f"{path}: incomplete fakeface metadata ({err}); re-export it"
            ) from err


def verdict(p_fake: float, info: ClassifierInfo) -> str:
    """ "fake", "real" or "unsure" for one face, by the file's threshold and unsure band."""
    if p_fake != p_fake:  # NaN: not scored
        return ""
    if info.unsure and info.unsure[0] <= p_fake < info.unsure[1]:
        return "unsure"
    return "fake" if p_fake >= info.threshold else "real"


def caveat(info: ClassifierInfo) -> str:
    """What a user must know beside this model's verdicts ("" when nothing)."""
    if info.trained_on.get("synthetic"):
        return (
            "this model was trained on synthetic demo images, never on a face photo: its "
            "verdicts on photos mean nothing"
        )
    if not info.trained_on:
        return "this model file does not say what it was trained on"
    return ""


def load_classifier(
    path: str | Path | None, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ClassifierInfo]:
    """Load an exported classifier and its metadata; ModelFileError (one line) if unusable.

    The file's bytes decide how: a TorchScript zip (`.ts`) loads into torch, an ONNX protobuf
    (`.onnx`, fp32 or int8) into ONNX Runtime (the `onnx` extra). Both return a module with the
    same call: N x 3 x S x S float in [0, 1] -> N x classes probabilities.

    Args:
        path: a file written by `fakeface.export`; None: the released model (fakeface.weights).
        device: where to map the weights (the file holds fp32 CPU weights); ONNX files run on
            the CPU only.
    """
    if path is None or path == "":
        return _load_released(device)
    path = Path(path).expanduser()
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: CUDA is not available here; use device=cpu")
    if not path.is_file():
        raise ModelFileError(
            f"model file {path} not found; export one with: python -m fakeface.export ckpt=<cnn.ckpt>"
        )
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):  # a zip archive: TorchScript
        model, meta = _load_torchscript(path, device)
    elif head[:1] == b"\x08":  # protobuf field 1 (ir_version), a varint: how ONNX files begin
        if torch.device(device).type != "cpu":
            raise ConfigError(f"device={device}: {path} is an ONNX file, which runs on the CPU")
        from fakeface.deploy.onnxfile import load_onnx

        model, meta = load_onnx(path)
    else:
        raise ModelFileError(
            f"{path} is not a readable TorchScript or ONNX file (neither header); "
            "export one with: python -m fakeface.export ckpt=<cnn.ckpt>"
        )
    if not meta:
        raise ModelFileError(
            f"{path} is a model file but not a fakeface classifier (no {META_FILE} inside); "
            "export one with: python -m fakeface.export ckpt=<cnn.ckpt>"
        )
    return model.eval(), ClassifierInfo.from_json(meta, path)


def _load_released(device: str | torch.device) -> tuple[torch.nn.Module, ClassifierInfo]:
    """The model shipped inside the package, announced in one log line."""
    from fakeface.weights import RELEASED

    if not RELEASED.is_file():
        raise ModelFileError(
            f"no classifier= given and this install has no released model ({RELEASED} is "
            "missing); reinstall fakeface, or pass classifier=<classifier.ts> from a training run"
        )
    model, info = load_classifier(RELEASED, device)
    folders = ", ".join(info.trained_on.get("folders", [])) or "unrecorded data"
    log.info(
        "classifier: the released model %s (fakeface %s), trained on %s; threshold %.2f; "
        "docs/model_card.md says how far to trust it",
        info.name or RELEASED.name, info.fakeface_version, folders, info.threshold,
    )  # fmt: skip
    return model, info


def _load_torchscript(path: Path, device: str | torch.device) -> tuple[torch.nn.Module, str]:
    """A TorchScript file and its metadata text ("" when it has none)."""
    extra = {META_FILE: ""}
    try:
        with quiet_torchscript():
            model = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError, zipfile.BadZipFile, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(
            f"{path} is not a readable TorchScript file ({first[:120]}); "
            "re-export it with: python -m fakeface.export ckpt=<cnn.ckpt>"
        ) from err
    return model, extra[META_FILE]


def fast_dtype(device: str | torch.device = "cpu") -> torch.dtype | None:
    """The inference autocast dtype that is fastest on `device`, or None for fp32.

    bf16 on CPUs that have it natively (2x here). fp32 on CUDA: the exported CNN is
    launch-bound there and autocast's casts cost more than they save (one image on an H200:
    fp32 0.35 ms, bf16 0.53 ms); `precision=bf16` still asks for it.
    """
    device = torch.device(device)
    return torch.bfloat16 if device.type == "cpu" and bf16_supported(device) else None


def classify(
    model: torch.nn.Module,
    batch: torch.Tensor,
    dtype: torch.dtype | None = None,
    tta: bool = False,
) -> torch.Tensor:
    """Probabilities (N x classes, fp32, CPU) for a float NCHW batch in [0, 1].

    Args:
        model: a loaded classifier (any module with that contract).
        batch: N x 3 x S x S float32 in [0, 1]; moved to the model's device.
        dtype: autocast dtype (from `fast_dtype`), or None for plain fp32.
        tta: average with the horizontally mirrored batch (two passes).
    """
    device = next(iter(model.parameters())).device
    dtype = model_dtype(model, dtype)
    # NHWC is the fast layout for oneDNN/cuDNN convolutions (2x on CPU, fp32 and bf16 alike).
    x = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    precision = torch.autocast(device.type, dtype) if dtype is not None else nullcontext()
    with torch.inference_mode(), precision:
        p = model(x).float()
        if tta:
            p = (p + model(x.flip(-1)).float()) / 2
        return p.cpu()


def model_dtype(model: torch.nn.Module, dtype: torch.dtype | None) -> torch.dtype | None:
    """The autocast dtype `model` really runs under: None for an ONNX file (ONNX Runtime runs
    its own fp32 or int8 graph whatever autocast says), else `dtype`."""
    return None if getattr(model, "runs_own_precision", False) else dtype


def precision_dtype(precision: str, device: str | torch.device = "cpu") -> torch.dtype | None:
    """Map a `precision` option (auto | fp32 | bf16) to an autocast dtype (None = fp32)."""
    choices = {"auto": fast_dtype(device), "fp32": None, "bf16": torch.bfloat16}
    if precision not in choices:
        raise ConfigError(f"precision={precision!r}: use one of {', '.join(choices)}")
    return choices[precision]
