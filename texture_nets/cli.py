"""Entry point of ``texture-nets``: builds the argument parser from texture_nets/commands/.

Each module in texture_nets/commands defines ``add_parser(subparsers)``, which
registers one sub-command and sets ``func`` (taking the parsed namespace and
returning an exit code). Expected failures (bad files, unknown backends,
unwritable outputs) print one line on stderr and exit with status 2.

TensorFlow, absl and oneDNN write start-up chatter to stderr (17 lines in a demo, some before a
one-line error). Unless ``--verbose`` is given (before or after the command), :func:`quiet_frameworks`
sets their log levels before any of them is imported and filters the lines their C++ code writes
straight to file descriptor 2; everything else on stderr passes through unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pkgutil
import re
import sys
import threading
import warnings
from collections.abc import Iterator

import texture_nets.commands as commands_package

PROG = "texture-nets"
VERBOSE_HELP = "keep the frameworks' own log lines (TensorFlow, absl, oneDNN, TF Lite) on stderr"
# Lines the frameworks' C++ code writes to stderr: absl/glog records ("I0000 00:00:... file.cc:153] ...", levels
# I, W and E; F is fatal and kept), absl's notice about them, the rest of TF's CPU-feature record, TF Lite's.
FRAMEWORK_NOISE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./+-]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags"
    rb"|INFO: Created TensorFlow Lite .*delegate for CPU"
    rb"|INFO: Initialized TensorFlow Lite runtime)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run, compare and diagnose ports of Ulyanov's texture_nets generator against Torch7 semantics.",
    )
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    modules = [importlib.import_module(f"{commands_package.__name__}.{info.name}")
               for info in pkgutil.iter_modules(commands_package.__path__)]
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 100)):
        module.add_parser(subparsers)
    # The global flag works after the command too (texture-nets demo --verbose).
    for subparser in subparsers.choices.values():
        if not any("--verbose" in action.option_strings for action in subparser._actions):
            subparser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def expected_errors() -> tuple[type[BaseException], ...]:
    from contract import BackendError
    from fileio.errors import UserError
    from t7file import T7Error

    return (T7Error, BackendError, UserError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from harness.core.malloc import keep_freed_memory

    keep_freed_memory()  # forwards reuse the freed pages of the one before (harness/core/malloc.py)
    with contextlib.ExitStack() as stack:
        if not getattr(args, "verbose", False):
            stack.enter_context(quiet_frameworks())
        try:
            return int(args.func(args) or 0)
        except expected_errors() as error:
            print(f"{PROG}: error: {_name_the_file(error, args)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # `texture-nets models | head`: the reader left; nothing more to say
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141


def _name_the_file(error: BaseException, args: argparse.Namespace) -> str:
    """A model file's error names the file: the reader's messages say what is wrong, not where."""
    from t7file import T7Error

    message = str(error)
    if not isinstance(error, T7Error):
        return message
    candidates = [str(path) for path in (getattr(args, "t7", None), getattr(args, "model", None)) if path]
    if candidates and not any(candidate in message for candidate in candidates):
        return f"{candidates[0]}: {message}"
    return message


@contextlib.contextmanager
def quiet_frameworks() -> Iterator[None]:
    """Silence the frameworks' log lines for the duration of a command (see the module docstring)."""
    # Read by TensorFlow at import: 3 drops INFO, WARNING and ERROR records of its own logging. A user's own
    # setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # tf.lite.Interpreter's deprecation notice and Keras/TF import-time warnings.
        for module in (r"tensorflow(\..*)?", r"keras(\..*)?", r"tf_keras(\..*)?", r"absl(\..*)?"):
            warnings.filterwarnings("ignore", module=module)
        with _filtered_stderr():
            yield


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    """Route file descriptor 2 through a pipe and drop FRAMEWORK_NOISE lines; the C++ loggers write there
    directly, before TF_CPP_MIN_LOG_LEVEL is read (absl's pre-initialisation records)."""
    try:
        if sys.stderr is None or sys.stderr.fileno() != 2:
            yield  # stderr is captured in-process (tests): nothing writes around it
            return
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    reader, writer = os.pipe()
    os.dup2(writer, 2)
    os.close(writer)
    pump = threading.Thread(target=_pump, args=(reader, original), name="stderr-filter", daemon=True)
    pump.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end here: the pump sees end of file
        pump.join(timeout=5)
        os.close(original)


def _pump(reader: int, target: int) -> None:
    pending = b""
    with os.fdopen(reader, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            _write_all(target, b"".join(line + b"\n" for line in lines if not FRAMEWORK_NOISE.match(line)))
    if not FRAMEWORK_NOISE.match(pending):
        _write_all(target, pending)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


if __name__ == "__main__":
    sys.exit(main())
