"""What every bench section shares: the machine's facts, timing helpers, result rows, the table,
and the bench's model and data (built from the composed config)."""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from fakeface import conf_dir
from fakeface.precision import bf16_supported

log = logging.getLogger("fakeface.bench")
CONF = conf_dir()

# The original Keras pipeline on the 2-core reference machine (same model, 128x128, batch 32),
# and the targets of this project relative to it.
KERAS_TRAIN_IMG_S = 27.0
KERAS_PREDICT_MS = 59.0
TARGETS = {
    "train": ("img/s", 4 * KERAS_TRAIN_IMG_S, ">= 108 img/s (4x Keras)"),
    "latency": ("ms", KERAS_PREDICT_MS / 10, "<= 5.9 ms (Keras / 10)"),
    "realtime": ("FPS", 30.0, ">= 30 FPS"),
    "serve": ("ms", 100.0, "<= 100 ms per one-face photo"),
}


def machine_facts(device: str) -> dict[str, Any]:
    """What the numbers were measured on (for bench.json and docs/performance.md)."""
    cpu, cpu_flags = platform.processor() or platform.machine(), []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        cpu = names[0] if names else cpu
        flags = next((ln for ln in lines if ln.startswith("flags")), "")
        wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
        cpu_flags = [f for f in wanted if f in flags.split(":", 1)[-1].split()]
    facts = {
        "cpu": cpu,
        "cpu_flags": cpu_flags,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "device": device,
        "bf16_native": bf16_supported(device),
        "python": platform.python_version(),
    }
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def median_rate(durations: list[float], items: int) -> float:
    """Items per second from the median duration of one repeat."""
    return items / statistics.median(durations)


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    """The median duration of `fn` in milliseconds over `repeats` calls after `warmup`."""
    return statistics.median(timed(fn, repeats, warmup)) * 1e3


def synced_now(module: L.LightningModule) -> float:
    """perf_counter after the module's queued GPU work is done (CUDA runs asynchronously)."""
    if module.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def timed(fn: Callable[[], Any], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - start)
    return durations


def resident(cfg: DictConfig, **overrides: Any) -> L.LightningDataModule:
    """The configured data, decoded once and batched on the training device: model time only."""
    dm = instantiate(cfg.data, _convert_="all", device_resident=True, **overrides)
    dm.prepare_data()
    return dm


def classifier(cfg: DictConfig, **overrides: Any) -> L.LightningModule:
    if cfg.model.get("compile"):
        # One compiled model and one set of CUDA graphs at a time, as in a training run: on the
        # H200 (torch 2.11), the third compiled fit in one process failed while capturing.
        torch._dynamo.reset()
    # no validation here, so no schedule: ReduceLROnPlateau would wait for a val/loss
    return instantiate(cfg.model, _convert_="all", scheduler="none", **overrides)


def export_untrained(cfg: DictConfig, folder: Path) -> Path:
    """The configured CNN with fresh weights, exported: speed does not depend on the weights."""
    from fakeface.deploy.export import export_classifier

    model = instantiate(cfg.model, _convert_="all").eval()
    return export_classifier(model, folder / "classifier.ts", source="bench (untrained weights)")


def row(section: str, name: str, value: float, unit: str, target: str | None = None) -> dict:
    """One measurement; with a target, whether it is met (latency: lower is better)."""
    item: dict[str, Any] = {
        "section": section,
        "name": name,
        "value": round(value, 2),
        "unit": unit,
    }
    if target:
        _, goal, text = TARGETS[target]
        item["target"] = text
        item["met"] = bool(value <= goal) if unit == "ms" else bool(value >= goal)
        if target == "train":
            item["vs_keras"] = round(value / KERAS_TRAIN_IMG_S, 1)
        if target == "latency":
            item["vs_keras"] = round(KERAS_PREDICT_MS / value, 1)
    log.info("%s | %s: %.2f %s", section, name, value, unit)
    return item


def print_table(rows: list[dict], facts: dict[str, Any]) -> None:
    table = Table(
        title=f"fakeface bench: {facts['cpu']}, {facts['cpu_cores']} cores, {facts['device']}"
    )
    for column in ("section", "measurement", "value", "vs Keras", "target"):
        table.add_column(column, justify="right" if column in ("value", "vs Keras") else "left")
    for r in rows:
        met = {True: " [green]met[/]", False: " [red]missed[/]"}.get(r.get("met"), "")
        ratio = f"{r['vs_keras']}x" if "vs_keras" in r else ""
        value = "-" if r["value"] is None else f"{r['value']:.2f} {r['unit']}"
        table.add_row(
            r["section"],
            r["name"],
            value,
            ratio,
            r.get("target", "") + met,
        )
    Console(width=max(Console().width, 110)).print(table)


def markdown(rows: list[dict], facts: dict[str, Any], extra: list[str]) -> str:
    """bench.md: the machine, every row, then `extra` lines (the routes side by side)."""
    head = ", ".join(f"{k} {v}" for k, v in facts.items())
    lines = [f"# fakeface bench\n\n{head}\n", "| section | measurement | value | target |"]
    lines.append("|---|---|---|---|")
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.2f} {r['unit']}"
        met = {True: " (met)", False: " (missed)"}.get(r.get("met"), "")
        lines.append(f"| {r['section']} | {r['name']} | {value} | {r.get('target', '')}{met} |")
    if extra:
        lines += ["", "## Deploy routes", "", *extra]
    return "\n".join(lines) + "\n"
