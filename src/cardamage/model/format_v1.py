"""Models saved before the model classes: model.keras held a plain functional model whose parts
were found by the names ``build_model`` gave them then. This is the one place that knows those
names: it copies the weights of each part into a ``MultiTaskClassifier`` built from the spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import keras

from cardamage.errors import CardamageError
from cardamage.model.metadata import ModelSpec
from cardamage.model.multitask import MultiTaskClassifier, task_groups
from cardamage.tasks import Task


def from_functional(
    old: keras.Model, spec: ModelSpec, tasks: Sequence[Task]
) -> MultiTaskClassifier:
    """The classifier holding ``old``'s weights: "backbone" and "heads" in the shared layout;
    "backbone_<first task>" and "heads_<i>" in the per_task one; in a heads model, the
    "standardize" layer and per task "<task>_hidden" and "<task>" (the output layer)."""
    model = MultiTaskClassifier(replace(spec, weights="none"), tasks)
    groups = task_groups(spec.layout, tasks)
    try:
        for i, ((backbone, stack), group) in enumerate(zip(model.stacks, groups, strict=True)):
            shared = len(groups) == 1
            backbone.set_weights(
                old.get_layer("backbone" if shared else f"backbone_{group[0].name}").get_weights()
            )
            old_heads = old.get_layer("heads" if shared else f"heads_{i}")
            if stack.standardizer is not None:
                stack.standardizer.set_weights(old_heads.get_layer("standardize").get_weights())
                stack.standardizer.finalize_state()  # mean and variance from the adapted state
            for task in group:
                head = stack.heads[task.name]
                if head.hidden is not None:
                    head.hidden.set_weights(
                        old_heads.get_layer(f"{task.name}_hidden").get_weights()
                    )
                head.scores.set_weights(old_heads.get_layer(task.name).get_weights())
    except ValueError as e:
        reason = str(e).strip().splitlines()[0]
        raise CardamageError(f"the saved model does not match its model.json: {reason}") from None
    return model
