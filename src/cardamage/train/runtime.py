"""Devices, precision and seeds: CUDA when present, several GPUs mirrored, CPU otherwise."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
from importlib import metadata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

PACKAGES = ("cardamage", "keras", "tensorflow", "tensorflow-cpu", "numpy", "scikit-learn", "pillow")


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def configure_precision(mode: str) -> str:
    """Mixed float16 on GPU ('auto' or 'on'); float32 on CPU, where float16 is slower."""
    policy = "mixed_float16" if mode == "on" or (mode == "auto" and gpus()) else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def distribution_scope() -> contextlib.AbstractContextManager:
    """Build and compile inside this: MirroredStrategy across several GPUs, else a no-op."""
    if len(gpus()) > 1:
        return _mirrored_strategy().scope()
    return contextlib.nullcontext()


@functools.cache
def _mirrored_strategy() -> tf.distribute.Strategy:
    """One strategy per process: the heads compiled in one fold train again in the next, and a
    variable may only be used under the strategy that created it."""
    return tf.distribute.MirroredStrategy()


def set_seed(seed: int) -> None:
    """Python, NumPy and TF/Keras seeds together, so a rerun gives the same run."""
    keras.utils.set_random_seed(seed)


def device_summary() -> str:
    found = gpus()
    return f"{len(found)} GPU(s)" if found else "CPU"


def versions() -> dict[str, str]:
    """Python, platform, device and package versions: recorded next to every trained model."""
    found = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device_summary(),
    }
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
