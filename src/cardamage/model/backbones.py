"""Registry of ImageNet backbones; each entry owns its preprocessing and its weight sources.

Every backbone built here takes float RGB pixels in [0, 255] and returns pooled features, so the
training pipeline, the predictor and every export share one input contract and nobody
re-implements preprocessing (the original divided by 255 for backbones that expect [-1, 1]).

With ``mid_level`` the features also pool the last block at 1/16 resolution: the top blocks of an
ImageNet network encode object classes, the middle ones textures and parts (a crack, a crease, a
scratch), which frozen heads need. Measured with linear probes under grouped 5-fold
cross-validation (MobileNetV2, real damage photos): severity macro-F1 0.485 -> 0.498, damage-type
mAP 0.677 -> 0.690; on the generated set, held-out severity accuracy 0.787 -> 0.843.

With ``scales`` the backbone also sees the photo shrunk by each factor, and the pooled features
of every scale are concatenated: one network looking at the whole car and, at the full input
size, at details (a dent is a few pixels at 160 px). Linear probes on real damage photos
(MobileNetV2, 480 px in, scales 1 and 3 against 160 px alone): damage-type mAP 0.671 -> 0.704,
dent AP 0.40 -> 0.48, severity macro-F1 0.488 -> 0.493.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras

from cardamage.config.scales import check_scales, is_multiscale
from cardamage.errors import CardamageError
from cardamage.model.pypi_weights import PREFIX, resolve_pypi_weights

#: The name of the pooling layer over the mid-level feature map.
MID_POOL = "mid_level_pool"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    #: the keras.applications constructor (None for a backbone whose class builds it all)
    constructor: Callable[..., keras.Model] | None
    #: "tf" scales [0, 255] to [-1, 1] in the model; "builtin" means the application does it.
    preprocessing: str
    takes_alpha: bool = False
    description: str = ""
    #: the layer whose pooled output ``mid_level`` adds: the end of the 1/16-resolution stage
    mid_layer: str | None = None
    #: the first layer ``tune_top`` trains: the top stage, from just below ``mid_layer``
    top_starts: str | None = None
    #: the Backbone class built for this entry (a keras.applications CNN by default)
    cls: type[Backbone] | None = None


def _app(attr: str) -> Callable[..., keras.Model]:
    """Resolve a keras.applications constructor lazily, so the registry costs nothing to import."""
    return lambda **kw: getattr(keras.applications, attr)(**kw)


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "mobilenet",
            _app("MobileNet"),
            "tf",
            takes_alpha=True,
            description="MobileNet v1 (the original's small model); alpha 0.25-1.0",
            mid_layer="conv_pw_11_relu",
            top_starts="conv_dw_11",
        ),
        BackboneSpec(
            "mobilenetv2",
            _app("MobileNetV2"),
            "tf",
            takes_alpha=True,
            description="MobileNetV2; alpha 0.35-1.4",
            mid_layer="block_13_expand_relu",
            top_starts="block_13_expand",
        ),
        BackboneSpec(
            "resnet50v2",
            _app("ResNet50V2"),
            "tf",
            description="ResNet50V2 (the original's large model)",
            mid_layer="conv4_block5_out",
            top_starts="conv4_block5_preact_bn",
        ),
        BackboneSpec(
            "efficientnetv2b0",
            _app("EfficientNetV2B0"),
            "builtin",
            description="EfficientNetV2-B0: modern, accurate for its cost",
            mid_layer="block6a_expand_activation",
            top_starts="block6a_expand_conv",
        ),
        BackboneSpec(
            "efficientnetv2s",
            _app("EfficientNetV2S"),
            "builtin",
            description="EfficientNetV2-S: best accuracy here, needs a GPU to train",
            mid_layer="block6a_expand_activation",
            top_starts="block6a_expand_conv",
        ),
        BackboneSpec(
            "convnext_tiny",
            _app("ConvNeXtTiny"),
            "builtin",
            description="ConvNeXt-Tiny",
            mid_layer="convnext_tiny_stage_2_block_8_identity",
            top_starts="convnext_tiny_stage_2_block_7_depthwise_conv",
        ),
    )
}


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise CardamageError(f"unknown backbone '{name}' (known: {known})") from None


def weights_id(weights: str) -> str:
    """A stable identity of a weights source, for cache keys and run records."""
    if weights in ("imagenet", "none") or weights.startswith(PREFIX):
        return weights
    path = Path(weights)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.name}:sha256:{digest.hexdigest()[:16]}"


def _check_weights(weights: str) -> str | None:
    """Keras' weights argument: 'imagenet' (download to the Keras cache), None, or a file path."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return weights
    path = Path(weights)
    if not path.is_file():
        raise CardamageError(
            f"weights file not found: {weights} (use 'imagenet', 'none' or a Keras weights file)"
        )
    return str(path)


def build_backbone(
    architecture: str,
    weights: str,
    image_size: int,
    alpha: float | None = None,
    mid_level: bool = False,
    scales: Sequence[int] = (1,),
    **kwargs,
) -> Backbone:
    """The registry entry's Backbone: pixels in [0, 255] -> pooled features. ``scales``:
    integer factors that divide ``image_size``; the network runs on the photo shrunk by each."""
    cls = get_backbone_spec(architecture).cls or ApplicationBackbone
    return cls(
        architecture=architecture,
        image_size=image_size,
        alpha=alpha,
        mid_level=mid_level,
        scales=tuple(scales),
        weights=weights,
        **kwargs,
    )


@keras.saving.register_keras_serializable(package="cardamage")
class Backbone(keras.Model):
    """What every backbone is: a functional model from float RGB pixels in [0, 255],
    (image_size, image_size, 3), to pooled features (feature_dim,), preprocessing inside.

    A subclass (KerasHub style) creates its layers as attributes, builds its graph from them and
    calls ``super().__init__(inputs=pixels, outputs=features, ...)``; it implements
    ``feature_maps`` (what Grad-CAM explains), ``tunable_layers`` (what fine-tuning unfreezes)
    and, where it has a top stage, ``split`` (what tune_top caches and trains), and its
    ``get_config`` holds its constructor's arguments (the weights come from the saved file).
    """

    @property
    def feature_dim(self) -> int:
        return int(self.output.shape[-1])

    @property
    def image_size(self) -> int:
        return int(self.input.shape[1])

    def feature_maps(
        self, pixels: keras.KerasTensor
    ) -> tuple[list[keras.KerasTensor], keras.KerasTensor]:
        """(the maps Grad-CAM explains, one (h, w, channels) map per scale, each pooled into the
        features by its mean over h x w; the features) of this backbone applied to ``pixels``."""
        raise CardamageError(f"backbone '{self.name}' has no feature map to explain")

    @property
    def tunable_layers(self) -> list[keras.layers.Layer]:
        """Its layers from input to output: fine-tuning unfreezes the last n of them."""
        raise CardamageError(f"backbone '{self.name}' cannot be fine-tuned: set fine_tune_layers 0")

    def split(self, at: str | None = None) -> tuple[keras.Model, keras.Model]:
        """(bottom, top) with top(bottom(pixels)) == self(pixels), cut at the input of layer
        ``at`` (default: ``top_starts``), both made of this backbone's own layers: ``tune_top``
        and fine-tuning with ``cached_views`` compute the bottom's activations once per image
        and view, then train the top on them, which is tuning the top at a fraction of the cost."""
        raise CardamageError(f"backbone '{self.name}' has no top stage to tune: set tune_top false")

    def tuned_cut(self, n_layers: int) -> str | None:
        """Where the activations below the top ``n_layers`` are cached (see ``split``), or None
        where there is no such cut (every layer tuned, several scales)."""
        return None

    #: the name of the layer whose input ``split`` cuts at (the cache key of tune_top's features)
    top_starts: str | None = None


@keras.saving.register_keras_serializable(package="cardamage")
class ApplicationBackbone(Backbone):
    """A keras.applications CNN with its registry entry's preprocessing, optionally its pooled
    mid-level block (``mid_level``) and several scales of the photo (``scales``)."""

    def __init__(
        self,
        architecture: str,
        image_size: int,
        alpha: float | None = None,
        mid_level: bool = False,
        scales: Sequence[int] = (1,),
        weights: str = "none",
        **kwargs,
    ) -> None:
        spec = get_backbone_spec(architecture)
        check_scales(scales, image_size)
        multiscale = is_multiscale(scales)
        app = _application(spec, weights, image_size, alpha, multiscale)
        # === Layers ===
        #: the global average pooling keras.applications ends with (pooling="avg"): the last
        #: GlobalAveragePooling2D, its input the last feature map (ConvNeXt normalises after it)
        self.top_pool = [
            layer for layer in app.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)
        ][-1]
        self.core = _with_mid_level(app, spec) if mid_level else app
        self.preprocessing = (
            keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit_range")
            if spec.preprocessing == "tf"
            else None
        )
        self.downscales = [_downscale(f) for f in scales] if multiscale else []
        pooled_per_scale = len(self.core.outputs)
        joined = pooled_per_scale * len(scales) > 1
        self.join = keras.layers.Concatenate(name="pooled") if joined else None
        # === Functional model ===
        pixels = keras.Input((image_size, image_size, 3), name="pixels")
        features = self._join([out for outs in self._per_scale(pixels, self.core) for out in outs])
        super().__init__(inputs=pixels, outputs=features, **{"name": "backbone", **kwargs})
        # === Config ===
        self.architecture, self.alpha, self.mid_level = architecture, alpha, mid_level
        self.scales = tuple(scales)
        self.top_starts = spec.top_starts

    def _per_scale(
        self, pixels: keras.KerasTensor, core: keras.Model
    ) -> list[list[keras.KerasTensor]]:
        """``core``'s outputs on the preprocessed pixels, for every scale in ascending order."""
        x = self.preprocessing(pixels) if self.preprocessing is not None else pixels
        return [_as_list(core(shrink(x))) for shrink in self.downscales] or [_as_list(core(x))]

    def _join(self, pooled: list[keras.KerasTensor]) -> keras.KerasTensor:
        return self.join(pooled) if self.join is not None else pooled[0]

    def feature_maps(
        self, pixels: keras.KerasTensor
    ) -> tuple[list[keras.KerasTensor], keras.KerasTensor]:
        with_map = keras.Model(self.core.input, [self.top_pool.input, *self.core.outputs])
        per_scale = self._per_scale(pixels, with_map)
        pooled = [out for outs in per_scale for out in outs[1:]]
        return [outs[0] for outs in per_scale], self._join(pooled)

    @property
    def tunable_layers(self) -> list[keras.layers.Layer]:
        return list(self.core.layers)

    def split(self, at: str | None = None) -> tuple[keras.Model, keras.Model]:
        at = at or self.top_starts
        if at is None:
            return super().split()
        if self.downscales:
            raise CardamageError("tune_top trains one scale: set scales [1] or tune_top false")
        cut = self.core.get_layer(at).input
        pixels = keras.Input(self.input_shape[1:], name="pixels")
        x = self.preprocessing(pixels) if self.preprocessing is not None else pixels
        bottom = keras.Model(self.core.input, cut, name=f"{self.core.name}_bottom")
        activations = keras.Input(cut.shape[1:], name="activations")
        top = keras.Model(cut, self.core.outputs, name=f"{self.core.name}_top")
        features = self._join(_as_list(top(activations)))
        return (
            keras.Model(pixels, bottom(x), name="backbone_bottom"),
            keras.Model(activations, features, name="backbone_top"),
        )

    def tuned_cut(self, n_layers: int) -> str | None:
        """The narrowest point at the resolution of the first tuned layer's input, at or below
        it, where the network is one tensor (not inside a residual block): MobileNetV2's top 100
        layers cut at block_6_expand, whose input is 28 x 28 x 32, not 28 x 28 x 192 above it."""
        layers = self.core.layers
        if self.downscales or not 0 < n_layers < len(layers) - 1:
            return None
        resolution, best, smallest = None, None, math.inf
        for layer in reversed(layers[1 : len(layers) - n_layers + 1]):
            shape = _single_shape(layer.input)
            if shape is None:  # an Add or Concatenate: no one tensor enters it
                continue
            resolution = resolution or shape[:-1]
            if shape[:-1] != resolution:
                break
            if math.prod(shape) < smallest and _cuts(self.core, layer):
                best, smallest = layer.name, math.prod(shape)
        return best

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "architecture": self.architecture,
            "image_size": self.image_size,
            "alpha": self.alpha,
            "mid_level": self.mid_level,
            "scales": list(self.scales),
        }


def _application(
    spec: BackboneSpec, weights: str, image_size: int, alpha: float | None, multiscale: bool
) -> keras.Model:
    kwargs: dict = {
        "include_top": False,
        "weights": _check_weights(resolve_pypi_weights(weights, spec.name, alpha)),
        # one network for every scale, so its input size stays open
        "input_shape": (None, None, 3) if multiscale else (image_size, image_size, 3),
        "pooling": "avg",
    }
    if alpha is not None:
        if not spec.takes_alpha:
            raise CardamageError(f"backbone '{spec.name}' has no width multiplier: remove 'alpha'")
        kwargs["alpha"] = alpha
    try:
        return spec.constructor(**kwargs)
    except CardamageError:
        raise
    except Exception as e:  # Keras raises ValueError/OSError/HTTP errors with long messages
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CardamageError(
            f"cannot build backbone '{spec.name}' with weights '{weights}': {reason}"
        ) from None


def _with_mid_level(app: keras.Model, spec: BackboneSpec) -> keras.Model:
    """The application with a second output: its mid-level layer, average-pooled. Same layers,
    same weights, one forward pass."""
    if spec.mid_layer is None:
        raise CardamageError(f"backbone '{spec.name}' has no mid-level layer: set mid_level false")
    mid = keras.layers.GlobalAveragePooling2D(name=MID_POOL)(app.get_layer(spec.mid_layer).output)
    return keras.Model(app.input, [app.output, mid], name=app.name)


def _downscale(factor: int) -> keras.layers.Layer:
    """The photo shrunk by ``factor`` by averaging factor x factor pixels: an exact box filter,
    no aliasing, and an operation every export format has. Factor 1 gets its (identity) layer
    too, so that every scale of a model has one."""
    return keras.layers.AveragePooling2D(factor, name=f"downscale_{factor}")


def _single_shape(x: keras.KerasTensor | Sequence[keras.KerasTensor]) -> tuple | None:
    """A tensor's shape without the batch axis; None for several tensors."""
    return None if isinstance(x, list | tuple) else tuple(x.shape[1:])


def _cuts(core: keras.Model, layer: keras.layers.Layer) -> bool:
    """Whether ``layer``'s input alone computes every output of ``core``."""
    try:
        keras.Model(layer.input, core.outputs)
    except ValueError:  # "not connected to inputs": the graph needs a tensor from below
        return False
    return True


def _as_list(x: keras.KerasTensor | Sequence[keras.KerasTensor]) -> list[keras.KerasTensor]:
    return list(x) if isinstance(x, list | tuple) else [x]


def nested_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer inside a model, nested models included, depth first."""
    found = []
    for sub in getattr(layer, "layers", []):
        found += [sub, *nested_layers(sub)]
    return found
