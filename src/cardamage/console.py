"""The original console loop, done right: `python main.py --config ... --debug False`.

Asks `Image filepath: ` and prints the original's dict, e.g.
`{'damage': [('moderate', 0.98)], 'location': [('front', 0.95)], 'damagetype': []}`.
A photo the model declines (not usable, or not a car) prints `not assessed: <reason>` instead
of the dict; an answer a person should check is followed by `needs review: <reason>`.
Paths can also come as arguments or piped on standard input; a bad file prints one line and
the loop goes on; Ctrl-C or end of input exits with status 0.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cardamage.errors import CardamageError
from cardamage.quiet import import_keras_unless_onnx
from cardamage.tasks import NULL_LABEL

#: Our task names -> the keys the original application printed.
ORIGINAL_KEYS = {"severity": "damage", "location": "location", "damage_type": "damagetype"}
PROMPT = "Image filepath: "


def parse_bool(text: str) -> bool:
    """`--debug False` means off (the original parsed it with type=bool, which turned it on)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got '{text}'")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Classify car damage in photos, one path at a time.")
    p.add_argument("--config", type=Path, default=Path("application_config.json"))
    p.add_argument("--debug", type=parse_bool, default=None, help="True or False")
    p.add_argument("images", nargs="*", type=Path, help="classify these and exit")
    return p


def load_predictor(config: Path):
    from cardamage.config import load_app_config
    from cardamage.inference.legacy import load_app_predictor

    cfg = load_app_config(config)
    import_keras_unless_onnx(cfg.predictor_engine)
    return cfg, load_app_predictor(cfg)


def original_format(prediction) -> dict[str, list[tuple[str, float]]]:
    return {
        ORIGINAL_KEYS.get(name, name): [
            (label, round(score, 2)) for label, score in p.labels if label != NULL_LABEL
        ]
        for name, p in prediction.tasks.items()
    }


def paths_from(args: argparse.Namespace) -> Iterator[str]:
    """Arguments, else piped lines, else an interactive prompt (the original's loop)."""
    if args.images:
        yield from (str(p) for p in args.images)
        return
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print(PROMPT, end="", flush=True)
            _wait_for_input()
        line = sys.stdin.readline()
        if not line:
            return
        if line.strip():
            yield typed_path(line)


def typed_path(text: str) -> str:
    """A path as typed or dragged into a terminal: surrounding quotes dropped, `~` expanded."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return os.path.expanduser(text)


def _wait_for_input() -> None:
    """Wait in short slices: Ctrl-C may land on one of TensorFlow's threads, and Python raises
    KeyboardInterrupt only when the main thread wakes up; a blocking read would never wake."""
    while not select.select([sys.stdin], [], [], 0.2)[0]:
        pass


def classify(predictor, path: str, debug: bool) -> bool:
    started = time.perf_counter()
    try:
        prediction = predictor.predict([Path(path)], batch_size=1)[0]
    except CardamageError as e:
        print(f"error: {e}", flush=True)
        return False
    if prediction.abstain:  # declined: no answer to print, only why
        print(f"not assessed: {prediction.abstain_reason}", flush=True)
    else:  # the original's dict as it was; a doubt goes beside it
        print(original_format(prediction), flush=True)
        if prediction.needs_review:
            print(f"needs review: {prediction.review_reason}", flush=True)
    if debug:
        elapsed = (time.perf_counter() - started) * 1000
        trust = prediction.trust_dict()
        print(f"debug: {elapsed:.0f} ms; {prediction.to_dict()}; {trust}", file=sys.stderr)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, predictor = load_predictor(args.config)
        debug = cfg.debug if args.debug is None else args.debug
        predictor.scores(predictor.decode(_blank(predictor.image_size)).pixels[None])  # warm up
        ok = all([classify(predictor, path, debug) for path in paths_from(args)])
    except CardamageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print()
        return 0
    return 0 if ok or not args.images else 1


def _blank(size: int):
    import numpy as np

    return np.zeros((size, size, 3), dtype=np.uint8)
