"""Import TensorFlow without its start-up chatter (oneDNN and CPU-feature notices on stderr).

TF 2.21 logs through absl before any log level applies, so the only reliable filter is to
capture file descriptor 2 during the import and pass through every line that is not known noise.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|I0000 |"
    r"To enable the following instructions|.*cpu_feature_guard|.*port\.cc:\d+\] oneDNN)"
)


def import_keras_quietly() -> None:
    if "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        for line in captured.read().decode(errors="replace").splitlines():
            if line.strip() and not NOISE.match(line):
                print(line, file=sys.stderr)


def import_keras_unless_onnx(engine: str) -> None:
    """Import Keras first with its start-up noise silenced, unless the engine is ONNX Runtime:
    the ONNX path never imports TensorFlow."""
    if not engine.startswith("onnx"):
        import_keras_quietly()
