"""Command-line flags shared by every CLI of the project: one-line errors and one rule per kind of number.

``deeplabv3plus.cli`` adds the model-side flags; the data CLIs (``cityscapes.*``, ``segdata.*``) use
these directly, so a bad flag anywhere ends in one line naming it and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

__all__ = ["BAD_INPUT", "FAILURE", "INTERRUPTED", "DefaultsOnceFormatter", "FlagError", "Parser", "bounded_int",
           "ignoring_interrupts", "inference_scale", "log_to_terminal", "non_negative_float", "non_negative_int",
           "one_line", "positive_float", "positive_int", "report_error"]

PROJECT_LOGGERS = ("segdata", "cityscapes", "deeplabv3plus")

BAD_INPUT, FAILURE, INTERRUPTED = 2, 1, 130
"""Exit statuses of every CLI: a bad flag or file; a failure while running (a write, a non-finite loss); Ctrl-C."""


class FlagError(ValueError):
    """A flag whose value contradicts another flag or a file; the message names the flag and the fix."""


class DefaultsOnceFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` says each default once: appended only where the help text does not say it already, and not for
    flags without one (None) or switches that are off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with errors on one line (``{prog}: error: ...``, no usage block) and exit status 2, each default
    said once in ``--help``, no abbreviated flags (``--iter 5`` is not taken for ``--iters``: a later flag could make
    it mean another) and the closest flag named for a mistyped one."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsOnceFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"argument (--[\w-]+)(/--\w+)+:", r"argument \1:", message)  # name a flag once, not its alias
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            message += self._closest_flags(unknown.group(1).split())
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    def _closest_flags(self, given: list[str]) -> str:
        """`` (did you mean --iters?)`` for the first given token that looks like a mistyped flag of this parser."""
        parsers = [self, *(choice for action in self._actions if isinstance(action, argparse._SubParsersAction)
                           for choice in action.choices.values())]
        flags = sorted({flag for parser in parsers for flag in parser._option_string_actions if flag.startswith("--")})
        for token in given:
            if token.startswith("--"):
                close = difflib.get_close_matches(token.split("=")[0], flags, n=1, cutoff=0.6)
                if close:
                    return f" (did you mean {close[0]}?)"
        return ""


def log_to_terminal(command: str) -> None:
    """A command's log lines on the terminal as plain messages: this project's (and ``command``'s) from INFO on,
    other packages' warnings only (an exporter's optimisation passes say nothing)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in (*PROJECT_LOGGERS, command):
        logging.getLogger(name).setLevel(logging.INFO)


def _number(kind: type, rule: Callable[[float], bool], description: str) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {description}, got {text!r}") from None
        if not rule(value):
            raise argparse.ArgumentTypeError(f"must be {description}, got {text}")
        return value

    parse.__name__ = description  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda value: value > 0, "a positive integer")
non_negative_int = _number(int, lambda value: value >= 0, "an integer >= 0")
positive_float = _number(float, lambda value: value > 0 and value != float("inf"), "a positive number")
non_negative_float = _number(float, lambda value: 0 <= value < float("inf"), "a number >= 0")
inference_scale = _number(float, lambda value: 0.125 <= value <= 8, "a scale from 0.125 to 8")


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An integer in ``low..high``."""
    return _number(int, lambda value: low <= value <= high, f"an integer from {low} to {high}")


def one_line(error: BaseException) -> str:
    """The message of an error in one line: a loader worker's re-raised error carries the worker's traceback, of
    which the last line is the original message."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    # the worker's traceback ends in "module.ErrorType: message" (a qualified name when the type was not rebuilt)
    return re.sub(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception): ", "", last)


def report_error(error: BaseException, state: str = "", writing: Path | str | None = None,
                 write_advice: str = "free space (or fix permissions) and run again",
                 failures: tuple[type[BaseException], ...] = ()) -> int:
    """Print the one line of an error that ends a command and return its exit status, the same for every CLI.

    Ctrl-C: ``interrupted: {state}``, 130. An OSError other than a missing file (a full disk, a permission while
    writing ``error.filename`` or ``writing``): ``cannot write FILE: reason; {write_advice}``, 1. A non-finite
    loss (FloatingPointError) or one of ``failures``: 1. Anything else (a missing or bad file, a bad flag:
    FileNotFoundError, ValueError): 2. ``state`` says what was kept, and ends every line that has one."""
    then = f"; {state}" if state else ""
    if isinstance(error, RuntimeError) and "DataLoader worker" in str(error):  # killed, e.g. by the OOM killer
        print(f"error: a data loading worker died ({one_line(error)}); the machine may be short of memory: lower "
              f"--workers{then}", file=sys.stderr)
        return FAILURE
    if isinstance(error, KeyboardInterrupt):
        print(f"interrupted{': ' + state if state else ''}", file=sys.stderr)
        return INTERRUPTED
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
        print(f"error: cannot write {error.filename or writing}: {error.strerror or one_line(error)}; {write_advice}"
              f"{then}", file=sys.stderr)
        return FAILURE
    print(f"error: {one_line(error)}{then}", file=sys.stderr)
    return FAILURE if isinstance(error, (FloatingPointError, *failures)) else BAD_INPUT


@contextlib.contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """Ctrl-C pressed again while a command stops (closing logs, waiting for a write, saying what was kept) does not
    cut the stop short: SIGINT is ignored inside the block (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
