"""`cardamage synth | train | evaluate | report | data | predict | serve | export | index`.

Thin commands over the library, one module per group. Heavy imports (TensorFlow) happen
inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cardamage.cli import data, index, inference, training
from cardamage.errors import CardamageError
from cardamage.quiet import import_keras_quietly

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


#: Commands that need no Keras, or decide from their engine once it is known (flag or config).
ENGINE_COMMANDS = ("synth", "predict", "serve", "evaluate", "index")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardamage",
        description="How badly a car is damaged, where, and what kind: train, evaluate, serve.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (training, data, inference, index):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command not in ENGINE_COMMANDS:
            import_keras_quietly()
        return args.run(args)
    except CardamageError as e:
        print(f"cardamage: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cardamage ... | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("cardamage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
