"""Child processes that behave as if a user started them in the foreground."""

from __future__ import annotations

import signal


def interruptible() -> None:
    """``preexec_fn``: take SIGINT like a foreground process. A test runner started in the
    background (`make test &`) hands SIGINT down as ignored, and Python then keeps ignoring
    it, which would make every Ctrl-C test fail for a reason that is not the product's."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
