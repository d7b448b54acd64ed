"""Grad-CAM heatmaps: where in the photo the model looked for each task's prediction.

Grad-CAM (Selvaraju et al., 2017) weights the channels of the backbone's last convolutional
feature map by the gradient of a score and keeps the positive part. We differentiate the heads'
logits, not their probabilities: a confident softmax or sigmoid saturates and its gradients
vanish into noise, while with global average pooling and a linear head Grad-CAM on a logit is
exactly CAM, the logit split into each location's contribution. Grad-CAM++ was not chosen: its
closed-form weights assume an exponential score, and it mainly helps with several instances of
one object class, which a damage photo seldom has.
"""

from __future__ import annotations

import base64
import io
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from cardamage.errors import CardamageError
from cardamage.inference.predictor import Predictor
from cardamage.model.multitask import HeadStack, ModelBundle, MultiTaskClassifier, TaskHead
from cardamage.tasks import Task


@dataclass(frozen=True)
class _Branch:
    """One backbone and the tasks on it, as a model: image -> [feature maps, pre-logit inputs],
    one map per scale the backbone sees (``Backbone.feature_maps``: for a CNN its last conv
    feature map, for a transformer its tokens on their patch grid), then each ensemble
    member's pre-logit inputs, task by task.

    Each head's final Dense layer is applied by hand: its logits come before the activation.
    """

    model: keras.Model
    #: per ensemble member (one without an ensemble), its heads by task name
    members: list[dict[str, TaskHead]]
    n_maps: int

    @property
    def tasks(self) -> list[str]:
        return list(self.members[0])


class Explainer:
    """Grad-CAM for a cardamage Keras model; the gradient models are built once and reused.

    It explains the photo as given: with flip test-time augmentation the mirrored pass is left
    out (its map would be the mirror image of another photo's). With an ensemble of heads the
    score explained is the members' mean logit of what their mean probabilities predict."""

    def __init__(self, keras_model: MultiTaskClassifier) -> None:
        if keras.backend.backend() != "tensorflow":
            raise CardamageError("heatmaps need the TensorFlow backend (KERAS_BACKEND=tensorflow)")
        self.model = keras_model
        self._branches = _branches(keras_model)

    @classmethod
    def for_predictor(cls, predictor: Predictor) -> Explainer:
        """Reuse the predictor's Keras model; engines without gradients (ONNX) load model.keras."""
        model = getattr(predictor.engine, "model", None)
        if not isinstance(model, MultiTaskClassifier):
            model = ModelBundle.load(predictor.model_dir).model
        return cls(model)

    def heatmaps(self, pixels: np.ndarray, tasks: Sequence[Task]) -> dict[str, np.ndarray]:
        """{task: (n, H, W) heatmap in [0, 1] at the input size} for (n, H, W, 3) pixels in
        [0, 255]; each map explains the predicted class, or the predicted labels together."""
        known = [name for branch in self._branches for name in branch.tasks]
        unknown = [t.name for t in tasks if t.name not in known]
        if unknown:
            raise CardamageError(f"the model has no task {unknown} (it has {known})")
        x = tf.convert_to_tensor(np.asarray(pixels, dtype=np.float32))
        maps: dict[str, np.ndarray] = {}
        for branch in self._branches:
            mine = [t for t in tasks if t.name in branch.tasks]
            if mine:
                maps.update(_branch_heatmaps(branch, x, mine))
        return {t.name: maps[t.name] for t in tasks}


def _branches(model: MultiTaskClassifier) -> list[_Branch]:
    """One gradient model per backbone and the heads on it (every ensemble member's)."""
    image = keras.Input(model.input_shape[1:], name="image")
    branches = []
    for backbone, stacks in model.branches:
        maps, features = backbone.feature_maps(image)
        pre_logits = [t for stack in stacks for t in _pre_logits(stack)(features).values()]
        members = [dict(stack.heads) for stack in stacks]
        branches.append(_Branch(keras.Model(image, [*maps, *pre_logits]), members, len(maps)))
    return branches


def _pre_logits(stack: HeadStack) -> keras.Model:
    """Features -> {task: its final Dense layer's input}, made of the stack's own layers: a
    model of its own, so that the same-named layers of ensemble members stay apart."""
    features = keras.Input((stack.feature_dim,), name="features")
    x = stack.standardizer(features) if stack.standardizer is not None else features
    outputs = {name: head.pre_logits(x) for name, head in stack.heads.items()}
    return keras.Model(features, outputs, name=f"{stack.name}_pre_logits")


def _branch_heatmaps(branch: _Branch, x: tf.Tensor, tasks: Sequence[Task]) -> dict[str, np.ndarray]:
    """One forward pass for all of a backbone's tasks, one gradient per task."""
    with tf.GradientTape(persistent=True) as tape:
        outputs = branch.model(x, training=False)
        maps, pre_logits = outputs[: branch.n_maps], iter(outputs[branch.n_maps :])
        inputs = [{name: next(pre_logits) for name in heads} for heads in branch.members]
        targets = {}
        for task in tasks:
            logits, probs = [], []
            for heads, pre in zip(branch.members, inputs, strict=True):
                dense = heads[task.name].scores
                logits.append(
                    tf.matmul(tf.cast(pre[task.name], dense.kernel.dtype), dense.kernel)
                    + dense.bias
                )
                probs.append(dense.activation(logits[-1]))
            mean_logits, mean_probs = tf.add_n(logits) / len(logits), tf.add_n(probs) / len(probs)
            targets[task.name] = tf.reduce_sum(_target(task, mean_logits, mean_probs))
    as_float32 = [tf.cast(m, tf.float32) for m in maps]
    heatmaps = {}
    for name, target in targets.items():
        grads = [tf.cast(g, tf.float32) for g in tape.gradient(target, maps)]
        heatmaps[name] = _grad_cam(as_float32, grads, x.shape[1:3])
    return heatmaps


def _target(task: Task, logits: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:
    """The score each image's map explains: the predicted class's logit (multiclass), or the sum
    of the logits of the labels over their thresholds, the top label when none is (multilabel)."""
    top = tf.one_hot(tf.argmax(probs, axis=-1), len(task.labels), dtype=logits.dtype)
    if task.multiclass:
        return tf.reduce_sum(logits * top, axis=-1)
    passed = tf.cast(probs >= tf.constant(task.thresholds, dtype=probs.dtype), logits.dtype)
    nothing_passed = 1.0 - tf.reduce_max(passed, axis=-1, keepdims=True)
    return tf.reduce_sum(logits * (passed + nothing_passed * top), axis=-1)


def _grad_cam(
    feature_maps: Sequence[tf.Tensor], grads: Sequence[tf.Tensor], size: Sequence[int]
) -> np.ndarray:
    """ReLU of the gradient-weighted channel sum, upsampled to ``size``, scaled to max 1. With
    several scales the logit is the sum of each scale's part, so their maps add up, each as its
    contribution per unit of photo area (a cell of a coarse map covers more of the photo)."""
    cam = 0.0
    for feature_map, g in zip(feature_maps, grads, strict=True):
        weights = tf.reduce_sum(g, axis=(1, 2))  # the mean, times the map's cells
        part = tf.nn.relu(tf.einsum("nhwk,nk->nhw", feature_map, weights))
        cam += tf.image.resize(part[..., None], size, method="bilinear")[..., 0].numpy()
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.clip(np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0), 0.0, 1.0)


#: Heatmap colours, low to high: blue, green, yellow, red.
COLOUR_MAP = "jet"
#: Height of the white band ``captioned_png`` adds under the overlay (caption and colour scale).
CAPTION_BAND = 44


def overlay_png(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> bytes:
    """A PNG of the (H, W, 3) uint8 photo with the jet-coloured heatmap blended on top; the
    heatmap, in [0, 1] at any size, is stretched over the whole photo."""
    photo = np.asarray(image, dtype=np.uint8)
    height, width = photo.shape[:2]
    stretched = Image.fromarray(np.asarray(heatmap, dtype=np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    colours = matplotlib.colormaps[COLOUR_MAP](np.clip(np.asarray(stretched), 0.0, 1.0))[..., :3]
    blended = (1 - alpha) * photo + alpha * 255 * colours
    buffer = io.BytesIO()
    Image.fromarray(np.round(blended).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def captioned_png(png: bytes, caption: str) -> bytes:
    """The overlay over a white band with its caption and colour scale, so a heatmap file read
    on its own (in a folder, in an e-mail) says what it maps and which colour means what."""
    font = ImageFont.load_default(size=13)
    overlay = Image.open(io.BytesIO(png)).convert("RGB")
    legend = ("low", "high: where the model looked")
    bar = (96, 10)
    text_width = max(font.getlength(caption), bar[0] + sum(map(font.getlength, legend)) + 16)
    width = max(overlay.width, round(text_width) + 12)
    sheet = Image.new("RGB", (width, overlay.height + CAPTION_BAND), "white")
    sheet.paste(overlay, ((width - overlay.width) // 2, 0))
    draw = ImageDraw.Draw(sheet)
    top = overlay.height + 4
    draw.text((6, top), caption, fill="black", font=font)
    low_end = 6 + font.getlength(legend[0]) + 4
    draw.text((6, top + 20), legend[0], fill="black", font=font)
    ramp = matplotlib.colormaps[COLOUR_MAP](np.linspace(0.0, 1.0, bar[0]))[None, :, :3] * 255
    scale = Image.fromarray(np.repeat(ramp, bar[1], axis=0).astype(np.uint8))
    sheet.paste(scale, (round(low_end), top + 24))
    draw.text((round(low_end) + bar[0] + 4, top + 20), legend[1], fill="black", font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


#: One explainer per predictor, so a web server builds its gradient models once, not per request.
_EXPLAINERS: weakref.WeakKeyDictionary[Predictor, Explainer] = weakref.WeakKeyDictionary()


def explain_image(
    predictor: Predictor, pixels: np.ndarray, tasks: Sequence[str] | None = None
) -> dict[str, str]:
    """{task: base64 PNG of the photo with its heatmap} for one uint8 photo of any size, for the
    web API; ``tasks`` names a subset of the predictor's tasks (default: all). The predictor
    stretches the photo to its square input, so stretching each map back lines it up."""
    photo = np.asarray(Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("RGB"))
    if predictor not in _EXPLAINERS:
        _EXPLAINERS[predictor] = Explainer.for_predictor(predictor)
    maps = _EXPLAINERS[predictor].heatmaps(
        predictor.decode(photo).pixels[None], _select(predictor.tasks, tasks)
    )
    return {
        name: base64.b64encode(overlay_png(photo, heatmap[0])).decode("ascii")
        for name, heatmap in maps.items()
    }


def mapped_tasks(prediction: dict) -> list[str]:
    """The tasks of a ``Prediction.to_dict()`` worth a map: every multiclass task, and each
    multilabel task with a label over its threshold. Mapping the top label of a task that found
    none would highlight whatever scored highest, however low: for a clean car, the sky."""
    return [name for name, p in prediction.items() if p["kind"] == "multiclass" or p["labels"]]


def _select(tasks: Sequence[Task], names: Sequence[str] | None) -> list[Task]:
    """The named tasks, with the predictor's thresholds; a name it does not know is an error."""
    if names is None:
        return list(tasks)
    by_name = {t.name: t for t in tasks}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise CardamageError(f"unknown task {unknown} (known: {', '.join(by_name)})")
    return [by_name[n] for n in names]
