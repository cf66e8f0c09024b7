"""The web app: a page that checks photos, and the JSON API behind it (FastAPI).

    GET  /             the page (static/index.html)
    POST /api/predict  multipart `files` (one or many images) [?heatmap=true] -> per file: faces
                       with box, p_fake, verdict (and heat map), or an error naming the file
    GET  /api/model    the model's name, version, training data and operating point
    GET  /model-card   the model card (docs/model_card.md)
    GET  /docs         OpenAPI documentation (FastAPI's)

No file name or path from the client is ever opened: uploads are read into memory (Starlette
spools large parts to an anonymous temporary file, closed when the request ends) and nothing
else is written.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

import fakeface
from fakeface.deploy.modelfile import ClassifierInfo, caveat
from fakeface.errors import ConfigError
from fakeface.serve.analyse import Analyser, Limits, UploadError, decode

MB = 2**20


def model_summary(info: ClassifierInfo) -> dict[str, Any]:
    """What a client should know about the model beside each verdict."""
    return {
        "name": info.name or info.arch,
        "arch": info.arch,
        "fakeface_version": info.fakeface_version or fakeface.__version__,
        "trained_on": info.trained_on,
        "threshold": info.threshold,
        "unsure": list(info.unsure),
        "caveat": caveat(info),
        "card": "docs/model_card.md",
    }


def create_app(analyser: Analyser, limits: Limits, max_request_bytes: int = 100 * MB) -> FastAPI:
    """The app around one loaded model and face detector.

    Args:
        analyser: the model, detector and scoring settings.
        limits: per-file limits (bytes, pixels).
        max_request_bytes: a whole request over this is refused with 413 before it is read.
    """
    app = FastAPI(
        title="fakeface",
        version=fakeface.__version__,
        summary="Is this face photo real or generated? Faces, p_fake, verdicts and heat maps.",
    )
    summary = model_summary(analyser.info)
    page = files("fakeface.serve").joinpath("static/index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/model-card", response_class=PlainTextResponse, include_in_schema=False)
    def card() -> str:
        # the card lives in the checkout's docs/; an installed wheel names where to read it
        path = Path(fakeface.__file__).resolve().parents[2] / "docs" / "model_card.md"
        if path.is_file():
            return path.read_text()
        return "The model card is docs/model_card.md in the fakeface source repository."

    @app.get("/api/model")
    def model() -> dict[str, Any]:
        """The model behind the verdicts: name, training data, threshold and unsure band."""
        return summary

    @app.post("/api/predict")
    async def predict(
        request: Request,
        heatmap: bool = Query(False, description="add a heat map (PNG data URL) per face"),
    ) -> JSONResponse:
        """Score every uploaded image (multipart field `files`).

        Per file: `faces` (box [x, y, w, h] in image pixels, p_fake, verdict fake / real /
        unsure), `face_found`, or `error` with its HTTP `status`. The response is 200 when at
        least one file was scored; when none was, it carries the first file's error status.
        """
        results = await score_request(request, analyser, limits, max_request_bytes, heatmap)
        status = 200 if any(r["status"] == 200 for r in results) else results[0]["status"]
        return JSONResponse({"model": summary, "results": results}, status_code=status)

    return app


async def score_request(
    request: Request, analyser: Analyser, limits: Limits, max_request_bytes: int, heatmap: bool
) -> list[dict[str, Any]]:
    """Every file of a multipart request, scored in turn; HTTPException for the request itself."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        # a chunked upload would be read before its size is known: the limit needs the length
        raise HTTPException(411, "send the request with a Content-Length header (curl -F does)")
    size = int(length)
    if size > max_request_bytes:
        raise HTTPException(
            413,
            f"the request is {size / MB:.1f} MB, over the limit of "
            f"{max_request_bytes / MB:.0f} MB (serve.max_request_mb); send fewer files at once",
        )
    try:
        form = await request.form(max_files=256)
    except Exception as err:  # noqa: BLE001 (a malformed multipart body is the client's)
        raise HTTPException(400, f"cannot read the upload: {err}") from None
    uploads = [v for k, v in form.multi_items() if k == "files" and hasattr(v, "read")]
    if not uploads:
        await form.close()
        raise HTTPException(400, "no files: send images as multipart form field 'files'")
    results = []
    for number, upload in enumerate(uploads, 1):
        # the client's name is only echoed back, never used as a path
        name = (upload.filename or f"file {number}")[-200:]
        data = await upload.read(limits.max_file_bytes + 1)
        results.append(await run_in_threadpool(_one, analyser, data, name, limits, heatmap))
    await form.close()  # closes (and so deletes) the spooled temporary files
    return results


def _one(
    analyser: Analyser, data: bytes, name: str, limits: Limits, heatmap: bool
) -> dict[str, Any]:
    """One file's result: its faces, or its error."""
    try:
        image = decode(data, name, limits)
    except UploadError as err:
        return {"file": name, "status": err.status, "error": str(err), "faces": []}
    faces = analyser.faces(image, heatmaps=heatmap)
    return {
        "file": name, "status": 200, "error": None, "width": image.width,
        "height": image.height, "face_found": bool(faces), "faces": faces,
    }  # fmt: skip


def build_app(cfg: Any) -> FastAPI:
    """The app of a serve config (conf/serve.yaml): model, detector, limits."""
    from omegaconf import OmegaConf

    from fakeface.detector import Detector

    for key in ("max_file_mb", "max_request_mb", "max_megapixels", "max_faces"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{key}={value!r}: use a positive number")
    detector = Detector(
        cfg.classifier, precision=cfg.precision, faces=OmegaConf.to_container(cfg.detector),
        margin=cfg.margin, tta=cfg.tta, max_faces=int(cfg.max_faces),
    )  # fmt: skip
    detector.face_detector()  # build it now: a missing extra stops the server before it starts
    analyser = Analyser(detector)
    limits = Limits(int(cfg.max_file_mb * MB), int(cfg.max_megapixels * 1e6))
    return create_app(analyser, limits, int(cfg.max_request_mb * MB))


@contextmanager
def serve_in_thread(app: FastAPI, timeout: float = 30.0) -> Iterator[str]:
    """Run `app` with uvicorn in a daemon thread on a free localhost port; yield its URL.

    For the bench and the browser test: a real HTTP server, stopped when the block ends.
    """
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the server did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
