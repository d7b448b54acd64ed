"""A finished run's label review: its label_issues.csv, computed from its out-of-fold scores
when the run was trained without one (``run.label_review: off``) or before label review."""

from __future__ import annotations

from cardamage.data.manifest import load_manifest
from cardamage.metrics.label_review import Issue, find_issues
from cardamage.runs.rundir import RunDir


def review_run(run: RunDir) -> list[Issue]:
    """The run's issues: its ``label_issues.csv`` if it has one, else computed and written."""
    listed = run.label_issues()
    if listed is not None:
        return listed
    tasks = run.model_meta().tasks  # with the thresholds tuned out of fold
    manifest, _ = load_manifest(
        run.manifest_file, run.config().image_root, tasks, check_images=False
    )
    images, scores = run.read_oof(tasks)
    row_of = {image: i for i, image in enumerate(images)}
    order = [row_of[image] for image in manifest.images]
    issues = find_issues(manifest, tasks, {k: v[order] for k, v in scores.items()})
    run.write_label_issues(issues)
    return issues
