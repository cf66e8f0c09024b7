"""Bench section `export`: the exported classifier's one-image latency (tensor in, JPEG file in),
batched throughput and predict's scoring path, fp32 vs bf16."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from fakeface.bench.common import median_ms, median_rate, row, timed


def bench_export(cfg: DictConfig, device: str, model_file: Path, rows: list[dict]) -> None:
    from fakeface.deploy.inference import score_files
    from fakeface.deploy.modelfile import classify, fast_dtype, load_classifier
    from fakeface.precision import bf16_supported
    from fakeface.preprocess import preprocess_file

    b = cfg.bench
    model, info = load_classifier(model_file, device)
    size = info.image_size
    image = next(Path(cfg.data.root).rglob("*.jpg"))
    one, batch = torch.rand(1, 3, size, size), torch.rand(b.predict_batch, 3, size, size)
    # Both where bf16 is native, the default (fast_dtype) last.
    dtypes = {"fp32": None} | ({"bf16": torch.bfloat16} if bf16_supported(device) else {})
    dtypes = dict(sorted(dtypes.items(), key=lambda item: item[1] == fast_dtype(device)))
    for name, dtype in dtypes.items():
        ms = median_ms(lambda d=dtype: classify(model, one, d), b.repeats, b.warmup)
        rows.append(row("export", f"one image, tensor in ({name})", ms, "ms", target="latency"))
    name, dtype = list(dtypes.items())[-1]  # the default precision=auto picks
    # predict/evaluate tta=true: the image and its mirror, averaged
    ms = median_ms(lambda: classify(model, one, dtype, True), b.repeats, b.warmup)
    rows.append(row("export", f"one image + mirror, tta=true ({name})", ms, "ms"))
    for name, dtype in dtypes.items():

        def from_file(d: torch.dtype | None = dtype) -> None:
            classify(model, preprocess_file(image, size).unsqueeze(0), d)

        ms = median_ms(from_file, b.repeats, b.warmup)
        rows.append(row("export", f"one image, JPEG file in ({name})", ms, "ms", target="latency"))
    for name, dtype in dtypes.items():
        durations = timed(lambda d=dtype: classify(model, batch, d), max(3, b.repeats // 10), 2)
        rate = median_rate(durations, len(batch))
        rows.append(row("export", f"batch {len(batch)} ({name})", rate, "img/s"))
    # What predict and evaluate do: decode JPEG files, resize, batch, classify (score_files).
    files = sorted(Path(cfg.data.root).rglob("*.jpg"))[: 4 * b.predict_batch]
    start = time.perf_counter()
    score_files(model, info, files, batch_size=b.predict_batch, dtype=dtype)
    rate = len(files) / (time.perf_counter() - start)
    rows.append(row("export", f"{len(files)} JPEG files, score_files ({name})", rate, "img/s"))
