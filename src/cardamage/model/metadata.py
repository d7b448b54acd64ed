"""What a saved model is, without importing Keras: the serving path with ONNX stays light."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cardamage.errors import CardamageError
from cardamage.io import atomic_write_json
from cardamage.tasks import Task

MODEL_FILE = "model.keras"
META_FILE = "model.json"
META_FORMAT = "cardamage-model/1"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the architecture; stored beside the weights."""

    backbone: str
    weights: str
    image_size: int
    alpha: float | None = None
    head_units: int = 256
    dropout: float = 0.3
    #: "shared": one backbone for all tasks; "per_task": one backbone copy per task (the original).
    layout: str = "shared"
    #: features also pool a mid-level block (textures, parts); off for models saved before it
    mid_level: bool = False


@dataclass(frozen=True)
class ModelMeta:
    spec: ModelSpec
    tasks: list[Task]
    info: dict

    def write(self, directory: Path) -> None:
        atomic_write_json(
            Path(directory) / META_FILE,
            {
                "format": META_FORMAT,
                "spec": asdict(self.spec),
                "tasks": [t.to_dict() for t in self.tasks],
                "info": self.info,
            },
        )

    @classmethod
    def read(cls, directory: Path) -> ModelMeta:
        path = Path(directory) / META_FILE
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                ModelSpec(**meta["spec"]),
                [Task.from_dict(t) for t in meta["tasks"]],
                meta.get("info", {}),
            )
        except FileNotFoundError:
            raise CardamageError(f"no trained model in {directory} (missing {META_FILE})") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CardamageError(f"cannot read {path}: {e}") from None


def resolve_model_dir(path: Path | str) -> Path:
    """Accept a run directory (its chosen model) or a model directory."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / META_FILE).exists():
            return candidate
    raise CardamageError(f"no trained model at {path} (no {META_FILE} there or in {path}/model)")
