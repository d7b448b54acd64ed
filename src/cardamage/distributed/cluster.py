"""Ray imported on demand, with the extra named when it is missing, and joined or started."""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

from cardamage.errors import CardamageError

#: What `--ray` means without an address: start a Ray on this machine.
LOCAL = "local"


def require_ray() -> ModuleType:
    """The ``ray`` module, or a one-line error naming the extra that installs it."""
    try:
        importlib.import_module("ray.data")
    except ImportError:
        raise CardamageError(
            'Ray is not installed: pip install "cardamage[ray]" (Ray Data, for --ray)'
        ) from None
    return importlib.import_module("ray")


def connect(address: str | None) -> ModuleType:
    """Join the cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``), or start
    a Ray on this machine for ``local``/None; a Ray this process already joined is kept."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # workers that import TensorFlow
    local = address in (None, LOCAL)
    try:
        ray.init(
            address=None if local else address,
            logging_level=logging.WARNING,
            include_dashboard=False if local else None,
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise CardamageError(f"cannot join the Ray cluster at {address}: {e}") from None
    return ray
