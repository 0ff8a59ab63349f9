"""Errors a user can fix, and the one way every command line reports them.

* :class:`UserError` — the base of every *expected* failure: a bad argument, an unreadable or unfit file, a
  device this machine does not have, a folder that cannot be written. Its message is complete on its own: it
  names the argument or file and says what to do. The library's own errors derive from it
  (:class:`~spikeforge.training.CheckpointError`, :class:`~spikeforge.datasets.DatasetFileError`,
  :class:`~spikeforge.models.WeightsMismatchError`, the ann2snn tracing errors, ...), next to the built-in
  exception they always were (``RuntimeError``, ``FileNotFoundError``, ``ValueError`` ...), so existing
  ``except`` clauses keep working.
* :class:`UsageError` — a command-line or function argument with an unusable value.
* :func:`run_cli` — runs a command's ``main(argv)`` and turns a :class:`UserError` into one line on stderr and
  exit code 2, Ctrl-C into exit code 130, and anything else into one line naming the exception and exit code
  1. ``--debug`` anywhere on the command line (or ``SPIKEFORGE_DEBUG=1``) lets the exception through with
  its traceback instead.
* ``check_*`` — the argument checks the command lines share (numbers, devices, folders, files), each raising
  :class:`UsageError` naming the flag.
* :func:`load_plain` — ``torch.load(path, weights_only=True)`` with every way it can fail (missing, empty,
  truncated, not a torch file, objects other than tensors and plain data) turned into one message naming the
  file; it never suggests ``weights_only=False``.

Only the standard library is imported at module level (``spikeforge --help`` stays fast).
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["UserError", "UsageError", "run_cli", "debug_enabled", "check_int", "check_float", "check_device",
           "check_writable_dir", "check_existing", "load_plain", "DEBUG_ENV"]

DEBUG_ENV = "SPIKEFORGE_DEBUG"
_DEBUG_FLAG = "--debug"


class UserError(Exception):
    """An expected failure the user can fix; reported as its message alone (no traceback) by :func:`run_cli`."""

    exit_code = 2


class UsageError(UserError, ValueError):
    """An argument with an unusable value; the message names the argument."""


def debug_enabled() -> bool:
    """``True`` when ``SPIKEFORGE_DEBUG`` is set to anything but ``''``/``0``/``false``/``no``."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (before a ``--`` terminator), and whether it was there."""
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    found = _DEBUG_FLAG in argv[:end]
    return [a for i, a in enumerate(argv) if not (i < end and a == _DEBUG_FLAG)], found


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, KeyError) and len(error.args) == 1:  # KeyError's str() is the repr of the key
        text = f"key {error.args[0]!r}"
    return text.splitlines()[0] if text else ""


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None, *,
            prog: str | None = None) -> int:
    """Run ``main(argv)`` as a command: return its exit status, reporting failures in one line on stderr.

    * :class:`UserError`: ``<prog>: error: <message>``, its ``exit_code`` (2);
    * ``KeyboardInterrupt``: ``<prog>: interrupted``, 130;
    * any other exception: ``<prog>: error: <Type>: <first line>`` and a pointer to ``--debug``, 1.

    ``--debug`` is taken out of ``argv`` before ``main`` sees it; with it (or ``SPIKEFORGE_DEBUG=1``) every
    exception propagates with its traceback. ``SystemExit`` (argparse's usage errors, ``--help``) passes
    through untouched.
    """
    argv, debug_flag = _split_debug(sys.argv[1:] if argv is None else argv)
    if debug_flag:
        os.environ[DEBUG_ENV] = "1"  # code deeper down (and child processes) see it too
    debug = debug_flag or debug_enabled()
    prog = prog or Path(sys.argv[0]).name or "spikeforge"
    try:
        return int(main(argv) or 0)
    except UserError as error:
        if debug:
            raise
        message = str(error).strip() or type(error).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line, the traceback is one flag away
        if debug:
            raise
        print(f"{prog}: error: {type(error).__name__}: {_one_line(error)} (unexpected; rerun with --debug or "
              f"{DEBUG_ENV}=1 for the traceback, and please report it)", file=sys.stderr)
        return 1


# ------------------------------------------------------------------------------------------- argument checks
def check_int(value, flag: str, *, minimum: int | None = None, allow_none: bool = False) -> None:
    """``UsageError`` unless ``value`` is an int (``None`` with ``allow_none``) that is ``>= minimum``."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{flag} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{flag} must be >= {minimum}, got {value}")


def check_float(value, flag: str, *, minimum: float | None = None, positive: bool = False,
                allow_none: bool = False) -> None:
    """``UsageError`` unless ``value`` is a finite number (not nan/inf), ``> 0`` with ``positive`` and
    ``>= minimum`` when given (``None`` passes with ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{flag} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number, got {value}")
    if positive and not value > 0:
        raise UsageError(f"{flag} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{flag} must be >= {minimum}, got {value}")


def check_device(name, flag: str = "--device"):
    """The ``torch.device`` named ``name`` if this machine can put a tensor on it, else ``UsageError``.

    ``cuda`` without CUDA, ``cuda:3`` on a 2-GPU machine, ``mps`` off Apple silicon and misspelt names are
    refused here, before any work, instead of failing deep inside a ``.to(device)``.
    """
    import torch

    if isinstance(name, torch.device):
        device = name
    else:
        try:
            device = torch.device(str(name))
        except (RuntimeError, ValueError, TypeError):
            raise UsageError(f"{flag} {name!r} is not a device name; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "has no CUDA support" if torch.version.cuda is None else "finds no GPU"
            raise UsageError(f"{flag} {name}: CUDA is not available on this machine (torch {torch.__version__} "
                             f"{why}); use {flag} cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, ValueError) as error:
        raise UsageError(f"{flag} {name} cannot be used on this machine ({_one_line(error)}); use {flag} cpu"
                         ) from None
    return device


def check_existing(path, flag: str, *, kind: str = "file") -> Path:
    """``Path(path)`` if it exists as a ``kind`` (``'file'``, ``'dir'`` or ``'any'``), else ``UsageError``."""
    path = Path(path).expanduser()
    if not path.exists():
        what = {"any": "file or folder", "dir": "folder"}.get(kind, kind)
        raise UsageError(f"{flag} {path}: no such {what}")
    if kind == "file" and not path.is_file():
        raise UsageError(f"{flag} {path} is {'a folder' if path.is_dir() else 'not a regular file'}; pass a file")
    if kind == "dir" and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file; pass a folder")
    return path


def check_writable_dir(path, flag: str) -> Path:
    """``UsageError`` unless ``path`` is (or can become) a folder this process can write into.

    Nothing is created: the nearest existing folder on the way is probed with a temporary file (which is
    what finds read-only mounts, and folders root may not write either).
    """
    path = Path(path).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"{flag} {path}: {probe} is a file, not a folder; pass a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as error:
        reason = error.strerror or _one_line(error)
        where = "" if probe == path else f" (its existing parent {probe})"
        raise UsageError(f"{flag} {path}: cannot write into it{where}: {reason}; pass a folder you can write to"
                         ) from None
    return path


# ------------------------------------------------------------------------------------------ reading torch files
_GLOBAL = re.compile(r"GLOBAL ([\w.<>]+)")


def load_plain(path, *, what: str = "checkpoint", error: type[Exception] = UserError, advice: str = "",
               objects_advice: str = "", map_location="cpu", allowed_globals: Sequence[type] = ()):
    """``torch.load(path, map_location, weights_only=True)``, raising ``error(message)`` on every failure.

    ``allowed_globals``: classes that may be rebuilt besides tensors and plain data (passed to
    ``torch.serialization.safe_globals`` for this load only), e.g. ``argparse.Namespace`` for training
    checkpoints that store their arguments as one.

    The message names ``what`` and the file and says what is wrong with it: missing, a folder, empty,
    truncated or corrupt, not a file torch wrote, or holding objects other than tensors and plain data (named,
    e.g. ``posix.system``) which are not loaded because unpickling them could run code. ``advice`` (one
    sentence) is appended to the damaged/unreadable cases, ``objects_advice`` to the refused-objects case.
    torch's own suggestion to pass ``weights_only=False`` is never repeated.
    """
    import pickle

    import torch

    path = Path(path).expanduser()
    tail = f"; {advice}" if advice else ""
    if not path.exists():
        raise error(f"{what} {path} does not exist{tail}")
    if path.is_dir():
        raise error(f"{what} {path} is a folder, not a file{tail}")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise error(f"{what} {path} cannot be read ({e.strerror or _one_line(e)}){tail}") from None
    if size == 0:
        raise error(f"{what} {path} is empty (0 bytes): it was not written completely{tail}")
    try:
        if allowed_globals:
            with torch.serialization.safe_globals(list(allowed_globals)):
                return torch.load(path, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = _GLOBAL.search(str(e))
        if found:
            raise error(f"{what} {path} holds objects other than tensors and plain data (it refers to "
                        f"{found.group(1)}); it was not loaded, because unpickling such objects could run code. "
                        f"Only tensors, dicts, lists, tuples, strings and numbers"
                        + "".join(f", {c.__module__}.{c.__qualname__}" for c in allowed_globals) + " are read"
                        + (f". {objects_advice}" if objects_advice else "")) from None
        operand = re.search(r"Unsupported operand (\d+)", str(e))
        detail = f" (pickle operand {operand.group(1)} is not allowed)" if operand else ""
        raise error(f"{what} {path} is truncated or corrupt, or not a file written by torch.save{detail}{tail}"
                    ) from None
    except OSError as e:
        raise error(f"{what} {path} cannot be read ({e.strerror or _one_line(e)}){tail}") from None
    except (EOFError, RuntimeError, KeyError, ValueError, IndexError, TypeError, AttributeError) as e:
        # zip reader (RuntimeError), truncated pickle (EOFError), a text file read as a legacy pickle
        # (KeyError: its first byte), ... : the file is damaged or of another kind
        reason = _one_line(e).split(". ")[0]
        if not _starts_like_torch_file(path):
            kind = ("is not a file written by torch.save (neither a zip archive nor a pickle), or is truncated "
                    "or corrupt")
        else:
            kind = f"is truncated or corrupt ({type(e).__name__}: {reason})"
        raise error(f"{what} {path} {kind}{tail}") from None


def _starts_like_torch_file(path: Path) -> bool:
    """A zip archive (torch >= 1.6) or a pickle (the legacy format) by its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return True
    return head == b"PK" or head[:1] == b"\x80"
