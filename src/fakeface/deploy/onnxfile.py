"""The classifier as an ONNX file: write it (fp32 or int8), load it into ONNX Runtime.

The file carries the same contract as the TorchScript file: `fakeface.json` (ClassifierInfo) is
one entry of the ONNX model's metadata_props. A loaded file is an `OnnxClassifier`, an nn.Module
with the TorchScript file's call (float NCHW tensor in, probabilities tensor out), so predict,
evaluate, realtime and bench run it unchanged. onnxruntime (and, to write files, onnx and
onnxscript) come with the optional extra: pip install -e ".[onnx]".

Only torch, numpy and the stdlib at import time: the real-time loop may load this module.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakeface.errors import ConfigError, ModelFileError

META_KEY = "fakeface.json"  # the metadata_props key; the same name as TorchScript's extra file
INPUT, OUTPUT = "image", "probabilities"
OPSET = 20  # the opset PyTorch's dynamo exporter writes by default (torch 2.14)
EXTRA = 'pip install -e ".[onnx]"'


def ort_module() -> Any:
    """onnxruntime, or a one-line ModelFileError naming the extra."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ModelFileError(
            f"ONNX classifier files need ONNX Runtime: {EXTRA} (or pip install onnxruntime)"
        ) from err
    return onnxruntime


class OnnxClassifier(nn.Module):
    """An ONNX Runtime session behind the exported module's call: N x 3 x S x S float -> N x C.

    It runs on the CPU in fp32 (or the file's int8) whatever autocast is active; the empty
    parameter only tells `classify` which device to put the batch on.
    """

    runs_own_precision = True  # `modelfile.model_dtype`: autocast does not apply

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ORT reads a dense NCHW buffer: channels_last or flipped views are copied here.
        pixels = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        (probs,) = self.session.run([OUTPUT], {INPUT: pixels})
        return torch.from_numpy(probs)


def load_onnx(path: Path, threads: int | None = None) -> tuple[OnnxClassifier, str]:
    """An ONNX Runtime session for `path` and its fakeface metadata text ("" if it has none).

    Args:
        path: an ONNX file.
        threads: ONNX Runtime's intra-op threads; None follows torch.get_num_threads(), so the
            `threads=` setting of realtime (and bench) applies to both runtimes.
    """
    ort = ort_module()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # one image batch at a time: no parallel branches
    options.log_severity_level = 3  # errors only: the fallback warnings are ours to report
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own Fail/InvalidProtobuf/InvalidGraph classes
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelFileError(
            f"{path} is not a readable ONNX file ({first[:140]}); "
            "re-export it with: python -m fakeface.export ckpt=<cnn.ckpt> format=onnx"
        ) from err
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != ([INPUT], [OUTPUT]):
        raise ModelFileError(
            f"{path} is an ONNX model but not a fakeface classifier (inputs/outputs {names}); "
            "export one with: python -m fakeface.export ckpt=<cnn.ckpt> format=onnx"
        )
    meta = session.get_modelmeta().custom_metadata_map.get(META_KEY, "")
    return OnnxClassifier(session), meta


def save_onnx(module: nn.Module, out_path: Path, image_size: int, meta: str) -> Path:
    """Export `module` (fp32, CPU, eval) with PyTorch's dynamo exporter, a dynamic batch axis and
    `meta` in the metadata; written via a .partial file so no half-written model is left."""
    need_writer()
    example = (torch.rand(2, 3, image_size, image_size),)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), torch.no_grad(), _quiet_onnx_logs():
        warnings.simplefilter("ignore")  # exporter deprecation chatter; failures still raise
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    partial = out_path.with_name(out_path.name + ".partial")
    program.save(str(partial))
    write_metadata(partial, meta)
    partial.replace(out_path)
    return out_path


def quantize_int8(fp32_path: Path, out_path: Path, batches: Iterable[torch.Tensor]) -> Path:
    """Static int8 quantization of an fp32 ONNX file with ONNX Runtime, calibrated on `batches`.

    QDQ format (quantize/dequantize pairs ORT fuses into int8 kernels), per-channel int8
    weights, uint8 activations, MinMax ranges. The last linear layer, the temperature and the
    softmax stay fp32: quantized, the probabilities would come in steps of 1/255 (ties that
    blur ROC-AUC) and no longer sum to 1; that layer is a few hundred multiply-adds. The
    metadata is the fp32 file's until `write_metadata` replaces it.
    """
    need_writer()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {INPUT: x.to(torch.float32).numpy()}

    out_path.parent.mkdir(parents=True, exist_ok=True)  # format=int8 alone: nothing made it yet
    prepared = out_path.with_name(out_path.name + ".prep.onnx")
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        with _quiet_onnx_logs():
            quantize_static(
                str(prepared),
                str(partial),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=_fp32_tail(prepared),
            )
        partial.replace(out_path)
    finally:
        prepared.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return out_path


class _Drop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname  # ORT's quantizer logs on the root logger


@contextmanager
def _quiet_onnx_logs() -> Iterator[None]:
    """Hide the exporter's pass-by-pass INFO lines and the quantizer's notes on layers it
    leaves in fp32 (BatchNorm after ReLU); errors still raise."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    drop = _Drop()
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _fp32_tail(path: Path) -> list[str]:
    """The names of the nodes from the last Gemm/MatMul (the logits layer) to the output."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    last = max((i for i, n in enumerate(nodes) if n.op_type in ("Gemm", "MatMul")), default=None)
    return [] if last is None else [n.name for n in nodes[last:]]


def write_metadata(path: Path, meta: str) -> None:
    """Set the fakeface metadata of an ONNX file (rewritten in place via a .partial file)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {META_KEY: meta})
    partial = path.with_name(path.name + ".partial")
    onnx.save(model, str(partial))
    partial.replace(path)


def need_writer() -> None:
    """Writing ONNX needs onnx and onnxscript (the dynamo exporter) besides onnxruntime."""
    ort_module()
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError as err:
            raise ConfigError(f"writing ONNX files needs the {name} package: {EXTRA}") from err
