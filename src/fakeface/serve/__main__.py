"""Serve the page and the JSON API:

fakeface serve                         # http://127.0.0.1:8000 with the released model
fakeface serve classifier=<classifier.ts> port=8080 host=0.0.0.0
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from fakeface.cli import hydra_main

log = logging.getLogger(__name__)


@hydra_main("serve")
def main(cfg: DictConfig) -> None:
    """CLI: build the app and run it with uvicorn until Ctrl-C."""
    import uvicorn

    from fakeface.serve.app import build_app

    app = build_app(cfg)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("host=%s: the page and API are reachable from other machines", cfg.host)
    print(f"fakeface serve: open http://{cfg.host}:{cfg.port} (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")


if __name__ == "__main__":
    main()
