"""Bench section `routes`: every deploy route side by side in one run.

Routes: TorchScript fp32, TorchScript bf16 (where the CPU runs bf16 natively), ONNX Runtime fp32
and ONNX int8 (the `onnx` extra), all from one model of the configured architecture with fresh
weights (speed does not depend on the weights). Per route: one-image latency (median ms), batch
throughput (img/s), and the real-time loop (`fakeface.realtime`'s defaults, Haar detector, every
face classified) on generated 640x480 clips with 1 and with 3 faces per frame: FPS, detection
ms per frame, classification ms per face. A route that cannot run here gets a row saying why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from fakeface.bench.common import log, median_ms, median_rate, row, timed
from fakeface.bench.realtime import face_video, realtime_run, realtime_threads
from fakeface.errors import ConfigError

# (route name, export format, autocast dtype name)
ROUTES = (
    ("TorchScript fp32", "ts", None),
    ("TorchScript bf16", "ts", "bf16"),
    ("ONNX Runtime fp32", "onnx", None),
    ("ONNX int8", "int8", None),
)


def onnx_missing() -> str:
    """Why the ONNX routes cannot run here ("" when they can)."""
    for name in ("onnxruntime", "onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            return f'no {name}: pip install -e ".[onnx]"'
    return ""


def export_routes(cfg: DictConfig, folder: Path, formats: list[str]) -> dict[str, Path]:
    """The bench's model in each of `formats` (int8 calibrated on images from data.root)."""
    from fakeface.deploy.formats import export_formats

    model = instantiate(cfg.model, _convert_="all").eval()
    return export_formats(
        model,
        folder,
        formats,
        calib=cfg.data.root if "int8" in formats else None,
        calib_images=cfg.routes.calib_images,
        source="bench (untrained weights)",
    )


def skip(rows: list[dict], route: str, reason: str) -> None:
    """A row saying that `route` was not measured, and why."""
    log.info("routes | %s: skipped (%s)", route, reason)
    rows.append(
        {
            "section": "routes",
            "route": route,
            "name": f"{route}: skipped ({reason})",
            "value": None,
            "unit": "skipped",
        }
    )


def route_row(
    rows: list[dict], route: str, metric: str, value: float, unit: str, detail: str = ""
) -> None:
    """One measurement of `route`; `metric` is its column in the side-by-side table."""
    item = row("routes", f"{route}: {metric}{detail}", value, unit)
    item.update(route=route, metric=metric)
    rows.append(item)


def model_speed(
    rows: list[dict], route: str, path: Path, dtype: torch.dtype | None, cfg: DictConfig
) -> None:
    """One-image latency and batch throughput, with the process' threads (as predict runs)."""
    from fakeface.deploy.modelfile import classify, load_classifier

    b, batch = cfg.bench, cfg.routes.batch
    model, info = load_classifier(path, "cpu")
    size = info.image_size
    one, many = torch.rand(1, 3, size, size), torch.rand(batch, 3, size, size)
    ms = median_ms(lambda: classify(model, one, dtype), b.repeats, b.warmup)
    detail = f", threads={torch.get_num_threads()}"
    route_row(rows, route, "one image", ms, "ms", detail)
    durations = timed(lambda: classify(model, many, dtype), max(3, b.repeats // 10), 2)
    route_row(rows, route, f"batch {batch}", median_rate(durations, batch), "img/s", detail)


def realtime_speed(
    rows: list[dict], route: str, path: Path, dtype: torch.dtype | None, clips: dict[int, Path]
) -> None:
    """The real-time loop on each clip: FPS, detection ms per frame, classification ms per face."""
    for faces, clip in clips.items():
        summary = realtime_run(path, "cpu", clip, dtype, "all")
        stats = summary.stage_stats()
        per_frame = summary.faces / max(summary.frames, 1)
        what = f"real time, {faces} face{'s' if faces > 1 else ''}/frame"
        found = f"{summary.faces} faces in {summary.frames} frames"
        detail = f", threads={realtime_threads()} ({found})"
        route_row(rows, route, what, summary.fps, "FPS", detail)
        route_row(rows, route, f"{what}: detect ms/frame", stats["detect"][0], "ms")
        per_face = stats["classify"][0] / per_frame if per_frame else float("nan")
        route_row(rows, route, f"{what}: classify ms/face", per_face, "ms")


def bench_routes(cfg: DictConfig, folder: Path, rows: list[dict]) -> None:
    """Each route of ROUTES in `routes.formats`: latency, throughput, real time (see above)."""
    from fakeface.precision import bf16_supported

    spec = cfg.routes
    wanted = [r for r in ROUTES if r[1] in spec.formats]
    if not wanted:
        raise ConfigError(f"routes.formats={list(spec.formats)}: use any of ts, onnx, int8")
    instantiate(cfg.data, _convert_="all").prepare_data()  # the photos: clips, int8 calibration
    missing = onnx_missing()
    formats = sorted({f for _, f, _ in wanted if f == "ts" or not missing})
    paths = export_routes(cfg, folder / "routes", formats)
    clips = {
        n: face_video(cfg, folder / f"clip{n}.mp4", cfg.bench.video_frames, n) for n in spec.faces
    }
    for route, fmt, dtype_name in wanted:
        if fmt != "ts" and missing:
            skip(rows, route, missing)
            continue
        if dtype_name == "bf16" and not bf16_supported("cpu"):
            skip(rows, route, "this CPU has no native bf16")
            continue
        dtype = torch.bfloat16 if dtype_name == "bf16" else None
        model_speed(rows, route, paths[fmt], dtype, cfg)
        realtime_speed(rows, route, paths[fmt], dtype, clips)


def routes_markdown(rows: list[dict]) -> list[str]:
    """The routes side by side as markdown lines (empty without route rows)."""
    routes: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["section"] == "routes":
            routes.setdefault(r["route"], {})[r.get("metric", "skipped")] = r
    if not routes:
        return []
    metrics = [m for m in next(iter(v for v in routes.values() if "skipped" not in v), {})]
    lines = ["| route | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for route, values in routes.items():
        if "skipped" in values:
            cells = [values["skipped"]["name"].split(": ", 1)[1]] + [""] * (len(metrics) - 1)
        else:
            cells = [
                f"{values[m]['value']:.2f} {values[m]['unit']}" if m in values else ""
                for m in metrics
            ]
        lines.append(f"| {route} | " + " | ".join(cells) + " |")
    return lines
