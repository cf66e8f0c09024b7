"""Bench section `scale` (only when named): photos per second through the Python API, the plain
`fakeface predict` route and the Ray route (1 and 2 workers), and the API's one-photo latency.

Every route scores the same `scale.photos` copies of serve's bench photo (640x480, one face),
with the released model (or scale.classifier), MTCNN and the default precision. The Ray rows
start Ray first (its start-up is a one-time cost per job, not per photo) and include the actors'
start (model and MTCNN loading), as a job would.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fakeface.bench.common import CONF, log, row
from fakeface.bench.serve import photo_bytes


def bench_scale(cfg: DictConfig, rows: list[dict]) -> None:
    from fakeface.batch import RowWriter, predict_rows
    from fakeface.detector import Detector

    s = cfg.scale
    settings = {
        "model": s.classifier, "precision": "auto",
        "faces": OmegaConf.to_container(OmegaConf.load(CONF / "detector" / "mtcnn.yaml")),
    }  # fmt: skip
    photo = photo_bytes(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        paths = []
        for i in range(s.photos):
            paths.append(folder / f"{i:05d}.jpg")
            paths[-1].write_bytes(photo)
        det = Detector(**settings)
        for _ in range(cfg.bench.warmup):
            det(photo)
        times = []
        for _ in range(s.requests):
            start = time.perf_counter()
            det(photo)
            times.append((time.perf_counter() - start) * 1e3)
        rows.append(row("scale", "API: one 640x480 photo, median", statistics.median(times), "ms"))
        page = [
            r for r in rows if r["section"] == "serve" and r["name"].endswith("face(s): median")
        ]
        if page:  # sections=[serve,scale]: the page's latency measured in this run
            ratio = statistics.median(times) / page[0]["value"]
            rows.append(row("scale", "API latency / page latency", ratio, "x"))
        start = time.perf_counter()
        for _ in det.predict(paths, batch_size=32):
            pass
        rate = len(paths) / (time.perf_counter() - start)
        rows.append(row("scale", "API: predict(batch_size=32), in-process", rate, "photos/s"))
        start = time.perf_counter()
        writer = RowWriter(Path(tmp) / "plain" / "predictions.csv", "csv")
        for found in predict_rows(det, paths, batch_size=32, num_workers=cfg.scale.num_workers):
            writer.write(found)
        writer.close()
        plain = len(paths) / (time.perf_counter() - start)
        what = f"fakeface predict (num_workers={cfg.scale.num_workers}), CSV"
        rows.append(row("scale", what, plain, "photos/s"))
        if s.ray:
            bench_ray(settings, paths, Path(tmp), plain, rows)


def bench_ray(settings: dict, paths: list[Path], tmp: Path, plain: float, rows: list[dict]) -> None:
    """The Ray route with 1 and 2 workers on a local Ray; skipped (a log line) without Ray."""
    try:
        import ray
    except ImportError:
        log.warning('scale: Ray rows skipped: pip install "fakeface[ray]"')
        return
    from fakeface.scale import run_ray

    ray.init(include_dashboard=False, ignore_reinit_error=True, configure_logging=False)
    try:
        for workers in (1, 2):
            start = time.perf_counter()
            run_ray(settings, paths, tmp / f"ray{workers}", workers=workers)
            rate = len(paths) / (time.perf_counter() - start)
            rows.append(row("scale", f"Ray route, {workers} worker(s)", rate, "photos/s"))
        rows.append(row("scale", "Ray route (2 workers) / fakeface predict", rate / plain, "x"))
    finally:
        ray.shutdown()
