"""Benchmarks: python -m fakeface.bench [sections=[data,train,export,dcgan,realtime,routes]]
(and, when named, detect, serve and scale)

Runs the chosen sections (one module each in this package), with warm-up and medians, on the
configured data (the synthetic set by default), prints a table and writes bench.json (with the
machine's facts) and bench.md into the run directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fakeface.bench.common import export_untrained, log, machine_facts, markdown, print_table
from fakeface.bench.routes import routes_markdown
from fakeface.errors import ConfigError
from fakeface.precision import resolve_precision

SECTIONS = ("data", "train", "export", "dcgan", "realtime", "routes")
# only when named: face detectors need a folder of annotated photos; serve times a live server;
# scale times the API, predict and the Ray route on the released model (minutes)
EXTRA_SECTIONS = ("detect", "serve", "scale")


def run_sections(
    cfg: DictConfig, device: str, precisions: list[str], folder: Path, rows: list[dict]
) -> None:
    """The chosen sections in their fixed order; each appends its rows. `folder`: scratch."""
    from fakeface.bench.data import bench_data
    from fakeface.bench.dcgan import bench_dcgan
    from fakeface.bench.detect import bench_detect
    from fakeface.bench.export import bench_export
    from fakeface.bench.realtime import bench_realtime
    from fakeface.bench.routes import bench_routes
    from fakeface.bench.scale import bench_scale
    from fakeface.bench.serve import bench_serve
    from fakeface.bench.train import bench_train

    chosen = set(cfg.sections)
    if "data" in chosen:
        bench_data(cfg, rows)
    if "train" in chosen:
        bench_train(cfg, precisions, rows, device)
    model_file = export_untrained(cfg, folder) if {"export", "realtime"} & chosen else None
    if model_file is not None:  # their photos come from the data: generate the synthetic set
        instantiate(cfg.data, _convert_="all").prepare_data()
    if "export" in chosen:
        bench_export(cfg, device, model_file, rows)
    if "dcgan" in chosen:
        bench_dcgan(cfg, precisions, rows)
    if "realtime" in chosen:
        bench_realtime(cfg, device, model_file, folder, rows)
    if "routes" in chosen:
        bench_routes(cfg, folder, rows)
    if "detect" in chosen:
        bench_detect(cfg, rows)
    if "serve" in chosen:
        bench_serve(cfg, rows)
    if "scale" in chosen:
        bench_scale(cfg, rows)


def bench(cfg: DictConfig) -> dict[str, Any]:
    """Run `cfg.sections`, print the table, write bench.json; the result as saved."""
    known = SECTIONS + EXTRA_SECTIONS
    unknown = set(cfg.sections) - set(known)
    if unknown:
        raise ConfigError(
            f"sections={list(cfg.sections)}: unknown {sorted(unknown)}; use any of {list(known)}"
        )
    torch.set_float32_matmul_precision("high")
    device = (
        "cuda"
        if cfg.bench.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        else "cpu"
    )
    fast = resolve_precision("auto", "cuda" if device == "cuda" else "cpu")
    precisions = ["32-true"] + ([fast] if fast != "32-true" else [])
    L.seed_everything(cfg.seed, workers=True)
    facts = machine_facts(device)
    if hasattr(os, "getloadavg"):
        facts["load_average_1min"] = round(os.getloadavg()[0], 2)  # at the start; the end below
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        run_sections(cfg, device, precisions, Path(tmp), rows)
    if hasattr(os, "getloadavg"):  # other processes on the CPU: the numbers' context
        facts["load_average_1min"] = [facts.pop("load_average_1min"), round(os.getloadavg()[0], 2)]
    result = {"machine": facts, "config": OmegaConf.to_container(cfg.bench), "results": rows}
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    (out / "bench.md").write_text(markdown(rows, facts, routes_markdown(rows)))
    print_table(rows, facts)
    log.info("wrote %s", out / "bench.json")
    return result
