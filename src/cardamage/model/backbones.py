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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras

from cardamage.errors import CardamageError
from cardamage.model.metadata import check_scales, is_multiscale
from cardamage.model.pypi_weights import PREFIX, resolve_pypi_weights

#: The name of the pooling layer over the mid-level feature map.
MID_POOL = "mid_level_pool"
#: The prefix of the layers that shrink the photo for ``scales`` (``downscale_2``: half size).
DOWNSCALE = "downscale_"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    constructor: Callable[..., keras.Model]
    #: "tf" scales [0, 255] to [-1, 1] in the model; "builtin" means the application does it.
    preprocessing: str
    takes_alpha: bool = False
    description: str = ""
    #: the layer whose pooled output ``mid_level`` adds: the end of the 1/16-resolution stage
    mid_layer: str | None = None
    #: the first layer ``tune_top`` trains: the top stage, from just below ``mid_layer``
    top_starts: str | None = None


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
    name: str,
    weights: str,
    image_size: int,
    alpha: float | None = None,
    mid_level: bool = False,
    scales: Sequence[int] = (1,),
) -> keras.Model:
    """Pixels in [0, 255] -> pooled features, preprocessing inside the model. ``scales``:
    integer factors that divide ``image_size``; the network runs on the photo shrunk by each."""
    spec = get_backbone_spec(name)
    check_scales(scales, image_size)
    multiscale = is_multiscale(scales)
    kwargs: dict = {
        "include_top": False,
        "weights": _check_weights(resolve_pypi_weights(weights, name, alpha)),
        # one network for every scale, so its input size stays open
        "input_shape": (None, None, 3) if multiscale else (image_size, image_size, 3),
        "pooling": "avg",
    }
    if alpha is not None:
        if not spec.takes_alpha:
            raise CardamageError(f"backbone '{name}' has no width multiplier: remove 'alpha'")
        kwargs["alpha"] = alpha
    try:
        app = spec.constructor(**kwargs)
    except CardamageError:
        raise
    except Exception as e:  # Keras raises ValueError/OSError/HTTP errors with long messages
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CardamageError(
            f"cannot build backbone '{name}' with weights '{weights}': {reason}"
        ) from None
    if mid_level:
        app = _with_mid_level(app, spec)
    return _with_preprocessing(app, spec, image_size, scales)


def _with_mid_level(app: keras.Model, spec: BackboneSpec) -> keras.Model:
    """The application with a second output: its mid-level layer, average-pooled. Same layers,
    same weights, one forward pass."""
    if spec.mid_layer is None:
        raise CardamageError(f"backbone '{spec.name}' has no mid-level layer: set mid_level false")
    mid = keras.layers.GlobalAveragePooling2D(name=MID_POOL)(app.get_layer(spec.mid_layer).output)
    return keras.Model(app.input, [app.output, mid], name=app.name)


def _with_preprocessing(
    app: keras.Model, spec: BackboneSpec, image_size: int, scales: Sequence[int]
) -> keras.Model:
    pixels = keras.Input((image_size, image_size, 3), name="pixels")
    x = (
        keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit_range")(pixels)
        if (spec.preprocessing == "tf")
        else pixels
    )
    features = []
    for factor in scales:
        features += _as_list(app(_downscale(x, factor) if is_multiscale(scales) else x))
    if len(features) > 1:
        return keras.Model(
            pixels, keras.layers.Concatenate(name="pooled")(features), name="backbone"
        )
    return keras.Model(pixels, features[0], name="backbone")


def _downscale(x: keras.KerasTensor, factor: int) -> keras.KerasTensor:
    """The photo shrunk by ``factor`` by averaging factor x factor pixels: an exact box filter,
    no aliasing, and an operation every export format has. Factor 1 gets its (identity) layer
    too, so that every scale of a model is named by one."""
    return keras.layers.AveragePooling2D(factor, name=f"{DOWNSCALE}{factor}")(x)


def scale_layers(backbone: keras.Model) -> list[keras.layers.Layer]:
    """The downscaling layers of a multi-scale backbone in the order its features are joined
    (ascending factors); empty for a single-scale one."""
    found = [layer for layer in backbone.layers if layer.name.startswith(DOWNSCALE)]
    return sorted(found, key=lambda layer: int(layer.name.removeprefix(DOWNSCALE)))


def _as_list(x: keras.KerasTensor | Sequence[keras.KerasTensor]) -> list[keras.KerasTensor]:
    return list(x) if isinstance(x, list | tuple) else [x]


def backbone_core(backbone: keras.Model) -> keras.Model:
    """The keras.applications model inside a backbone built here (the layers one fine-tunes)."""
    return next(layer for layer in backbone.layers if isinstance(layer, keras.Model))


def top_pooling(core: keras.Model) -> keras.layers.Layer:
    """The global average pooling over the last feature map (the one Grad-CAM explains)."""
    pools = [
        layer
        for layer in core.layers
        if isinstance(layer, keras.layers.GlobalAveragePooling2D) and layer.name != MID_POOL
    ]
    if not pools:
        raise CardamageError(f"backbone '{core.name}' does not end with average pooling")
    return pools[-1]


def split_backbone(backbone: keras.Model, name: str) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) with top(bottom(pixels)) == backbone(pixels), both made of the backbone's
    own layers: ``tune_top`` caches the bottom's activations once per image and view, then
    trains the top on them, which is fine-tuning the top stage at a fraction of the cost."""
    spec = get_backbone_spec(name)
    if spec.top_starts is None:
        raise CardamageError(f"backbone '{name}' has no top stage to tune: set tune_top false")
    if scale_layers(backbone):
        raise CardamageError("tune_top trains one scale: set scales [1] or tune_top false")
    core = backbone_core(backbone)
    index = backbone.layers.index(core)
    cut = core.get_layer(spec.top_starts).input

    pixels = keras.Input(backbone.input_shape[1:], name="pixels")
    x = pixels
    for layer in backbone.layers[1:index]:  # preprocessing
        x = layer(x)
    bottom = keras.Model(core.input, cut, name=f"{core.name}_bottom")
    activations = keras.Input(cut.shape[1:], name="activations")
    features = keras.Model(cut, core.outputs, name=f"{core.name}_top")(activations)
    for layer in backbone.layers[index + 1 :]:  # the concatenation of top and mid-level
        features = layer(features)
    return (
        keras.Model(pixels, bottom(x), name="backbone_bottom"),
        keras.Model(activations, features, name="backbone_top"),
    )
