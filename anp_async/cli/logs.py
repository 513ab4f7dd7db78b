"""``-v/--log-level`` on every ``anp`` command, and the one logging setup they share.

The package logs under ``anp_async.*``. Without options only warnings and errors reach
stderr; ``-v`` shows info (mode switches, control requests, servers started), ``-vv``
debug; ``--log-level NAME`` sets it by name. Lines are concise::

    12.345 I anp_async.control: set_mode poll (budget=32)
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMAT = "%(relativeCreated)9.1f %(levelname).1s %(name)s: %(message)s"
_HANDLER_FLAG = "_anp_cli_handler"


def add_log_options(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """Add ``-v`` and ``--log-level`` to ``parser`` and every sub-command under it.

    Only the top-level parser sets defaults, so ``anp -v up`` and ``anp up -v`` (and
    ``anp bench latency -v``) all work.
    """
    kw: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    g = parser.add_argument_group("logging")
    g.add_argument(
        "-v", "--verbose", action="count", help="more log output on stderr (-v info, -vv debug)",
        **({"default": 0} if top else kw),
    )  # fmt: skip
    g.add_argument("--log-level", choices=LEVELS, type=str.lower, help="log level by name", **kw)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                add_log_options(sub)


def level_from_args(args: argparse.Namespace) -> int:
    """The logging level the options ask for (WARNING without any)."""
    name = getattr(args, "log_level", None)
    if name:
        return int(getattr(logging, name.upper()))
    v = getattr(args, "verbose", 0) or 0
    return logging.DEBUG if v >= 2 else logging.INFO if v == 1 else logging.WARNING


def configure_logging(args: argparse.Namespace) -> None:
    """Send the package's log records to stderr, one concise line each, at the chosen level."""
    level = level_from_args(args)
    pkg = logging.getLogger("anp_async")
    pkg.setLevel(level)
    if not any(getattr(h, _HANDLER_FLAG, False) for h in pkg.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter(FORMAT))
        setattr(h, _HANDLER_FLAG, True)
        pkg.addHandler(h)
