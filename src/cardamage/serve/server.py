"""`cardamage serve`: the app under uvicorn, with a graceful shutdown.

The model is loaded before the port is bound, so a wrong path or a broken model is a one-line
error at the command line rather than a server that never turns ready. On SIGINT or SIGTERM
uvicorn stops accepting connections, lets requests in flight finish (up to ``GRACE_S``), then
the batcher answers whatever is still queued before the process exits.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import uvicorn

from cardamage.inference.predictor import Predictor
from cardamage.serve.app import create_app
from cardamage.serve.service import load_predictor
from cardamage.serve.settings import ServeSettings, load_settings

GRACE_S = 30
#: uvicorn's logging, with the app's own warnings (refused uploads, failures) in its format:
#: else Python prints them as bare lines with no level.
LOG_CONFIG = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
LOG_CONFIG["loggers"]["cardamage"] = {"handlers": ["default"], "level": "INFO", "propagate": False}


def run(
    model: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    engine: str | None = None,
    config: Path | None = None,
    *,
    predictor: Predictor | None = None,
    **overrides: Any,
) -> None:
    """Serve until interrupted. Arguments left None come from ``config``, else the defaults.

    ``overrides`` are any other ServeSettings fields (api_key, max_files, ...). ``predictor``
    serves an already-built model (the original application's three models) instead of
    loading ``model``.
    """
    values = {"model": model, "host": host, "port": port, "engine": engine, **overrides}
    serve(load_settings(config, values), predictor=predictor)


def serve(settings: ServeSettings, predictor: Predictor | None = None) -> None:
    """Serve ``settings.model`` (or ``predictor``) until interrupted."""
    app = create_app(settings, predictor or load_predictor(settings))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            timeout_graceful_shutdown=GRACE_S,
            server_header=False,
            log_level="info",
            log_config=LOG_CONFIG,
        )
    )
    server.run()
