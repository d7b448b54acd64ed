"""What a saved model is, without importing Keras: the serving path with ONNX stays light."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cardamage.config import ModelConfig
from cardamage.errors import CardamageError
from cardamage.io import atomic_write_json
from cardamage.tasks import Task

MODEL_FILE = "model.keras"
META_FILE = "model.json"
META_FORMAT = "cardamage-model/1"
#: The serving graph's output beside the tasks: the pooled backbone features (the distribution
#: check's input), so every engine and export gives them.
FEATURES = "features"


#: The train config's model section owns the architecture defaults; ModelSpec takes them
#: (all but the ensemble fields, which the run's final_model decides).
_DEFAULT = {name: field.default for name, field in ModelConfig.model_fields.items()}
#: What model.json files written before a field existed meant by its absence.
LEGACY_SPEC = {"mid_level": False}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the architecture; stored beside the weights."""

    backbone: str
    weights: str
    image_size: int
    alpha: float | None = _DEFAULT["alpha"]
    head_units: int = _DEFAULT["head_units"]
    dropout: float = _DEFAULT["dropout"]
    #: heads standardise the features and penalise their weights (see build_heads)
    standardize: bool = _DEFAULT["standardize"]
    head_l2: float = _DEFAULT["head_l2"]
    #: "shared": one backbone for all tasks; "per_task": one backbone copy per task (the original).
    layout: str = _DEFAULT["layout"]
    #: features also pool a mid-level block (textures, parts)
    mid_level: bool = _DEFAULT["mid_level"]
    #: factors the photo is also shrunk by (see cardamage.model.backbones); (1,): one scale
    scales: tuple[int, ...] = _DEFAULT["scales"]
    #: the mirrored photo scored too (one more backbone pass), probabilities averaged
    flip_tta: bool = _DEFAULT["flip_tta"]
    #: members whose probabilities are averaged: a run's fold models with final_model
    #: "fold_ensemble" (set by the run, not a model-section option)
    ensemble: int = 1
    #: each member has its own backbone (folds that tuned theirs: k backbone passes); else
    #: the members are head stacks on one backbone pass (folds of a frozen backbone)
    ensemble_backbones: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(self.scales))  # a list when read from JSON
        if not isinstance(self.ensemble, int) or self.ensemble < 1:
            raise CardamageError(f"ensemble {self.ensemble!r}: give a whole number of heads >= 1")


@dataclass(frozen=True)
class ModelMeta:
    spec: ModelSpec
    tasks: list[Task]
    info: dict
    #: per task, its out-of-fold calibration (cardamage.trust.calibrators); none: raw scores
    calibration: dict = field(default_factory=dict)

    def write(self, directory: Path) -> None:
        atomic_write_json(
            Path(directory) / META_FILE,
            {
                "format": META_FORMAT,
                "spec": asdict(self.spec),
                "tasks": [t.to_dict() for t in self.tasks],
                "calibration": self.calibration,
                "info": self.info,
            },
        )

    @classmethod
    def read(cls, directory: Path) -> ModelMeta:
        path = Path(directory) / META_FILE
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                ModelSpec(**{**LEGACY_SPEC, **meta["spec"]}),
                [Task.from_dict(t) for t in meta["tasks"]],
                meta.get("info", {}),
                meta.get("calibration", {}),
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
