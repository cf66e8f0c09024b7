"""Bench section `serve` (only when named): `fakeface serve`'s /api/predict over real HTTP.

A live uvicorn server on a free localhost port, a stdlib client: the median and p95 latency of
one 640x480 one-face photo per request (without and with the heat map), and photos per second
for 32 photos in one request.
"""

from __future__ import annotations

import io
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from fakeface.bench.common import CONF, log, row


def photo_bytes(cfg: DictConfig) -> bytes:
    """serve.photo resized to 640x480 as JPEG; else a real face photo that ships in a package
    (scikit-image's astronaut, public domain; the dev extra has it) on the clip's backdrop, and
    without scikit-image a face of the data."""
    if cfg.serve.photo:
        image = Image.open(Path(cfg.serve.photo).expanduser()).convert("RGB").resize((640, 480))
    else:
        from fakeface.bench.realtime import backdrop, find_faces

        frame = backdrop()
        try:
            from skimage import data

            face = np.asarray(Image.fromarray(data.astronaut()).resize((200, 200)))[:, :, ::-1]
        except ImportError:
            from hydra.utils import instantiate

            instantiate(cfg.data, _convert_="all").prepare_data()  # a fresh clone has no data yet
            face = find_faces(cfg, 1, 200)[0]
        frame[140:340, 220:420] = face
        image = Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1]))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of `files` under the field name `files`, and its content type."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def serve_config(cfg: DictConfig) -> DictConfig:
    """`fakeface serve`'s defaults (conf/serve.yaml with its MTCNN detector), serve.classifier."""
    serve_cfg = OmegaConf.load(CONF / "serve.yaml")
    serve_cfg.detector = OmegaConf.load(CONF / "detector" / "mtcnn.yaml")
    serve_cfg.classifier = cfg.serve.classifier
    return serve_cfg


def post(url: str, files: list[tuple[str, bytes]]) -> bytes:
    body, content_type = multipart(files)
    request = urllib.request.Request(url, body, {"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return answer.read()


def bench_serve(cfg: DictConfig, rows: list[dict]) -> None:
    import json

    photo = photo_bytes(cfg)
    b = cfg.bench
    from fakeface.serve.app import build_app, serve_in_thread

    with serve_in_thread(build_app(serve_config(cfg))) as base:
        first = json.loads(post(f"{base}/api/predict", [("photo.jpg", photo)]))
        faces = len(first["results"][0]["faces"])
        log.info("serve: the bench photo has %d face(s) found", faces)
        for heatmap in (False, True):
            url = f"{base}/api/predict?heatmap={str(heatmap).lower()}"
            for _ in range(b.warmup):
                post(url, [("photo.jpg", photo)])
            times = []
            for _ in range(cfg.serve.requests):
                start = time.perf_counter()
                post(url, [("photo.jpg", photo)])
                times.append((time.perf_counter() - start) * 1e3)
            what = f"one 640x480 photo, {faces} face(s){', heat map' if heatmap else ''}"
            target = None if heatmap else "serve"
            rows.append(row("serve", f"{what}: median", float(np.median(times)), "ms", target))
            rows.append(row("serve", f"{what}: p95", float(np.percentile(times, 95)), "ms"))
        batch = [(f"photo{i}.jpg", photo) for i in range(32)]
        post(f"{base}/api/predict", batch)
        start = time.perf_counter()
        for _ in range(3):
            post(f"{base}/api/predict", batch)
        rate = 3 * len(batch) / (time.perf_counter() - start)
        rows.append(row("serve", "32 photos in one request", rate, "photos/s"))
