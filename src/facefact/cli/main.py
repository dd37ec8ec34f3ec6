"""`facefact` entry point: dispatches to sub-command modules and turns errors into messages.

Each sub-command module in this package exposes ``register(subparsers)``, which adds its parser
and sets ``func`` (called with the parsed args, returns an exit code).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import os
import signal
import sys
import threading

# transformers warns at import that torchvision is absent (facefact never needs it); CLI users
# should see facefact's messages, not that. An explicit TRANSFORMERS_VERBOSITY still wins.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# MediaPipe's C++ logging (--pose-from) writes INFO/WARNING lines about its own delegates to stderr
os.environ.setdefault("GLOG_minloglevel", "2")
# FACEFACT_OFFLINE means no network at all: huggingface_hub only honours its own switch (read once,
# at its import) for some requests of its own, so the CLI process sets it too. An explicit value wins.
# (The words are registry.offline()'s; importing it here would load torch before --help.)
if os.environ.get("FACEFACT_OFFLINE", "0").strip().lower() not in ("", "0", "false", "no", "off"):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

from facefact import __version__
from facefact.cli.exit_codes import ExitCode
from facefact.cli.outputs import os_error_words
from facefact.cli.terminal import safe_text
from facefact.errors import FacefactError

# Order is the order in `facefact --help`.
SUBCOMMAND_MODULES = ["generate", "template", "identity", "faces", "models", "convert", "prepare", "train", "evaluate",
                      "serve"]


class CommandParser(argparse.ArgumentParser):
    """argparse's parser (and, through add_subparsers, every sub-command's) with facefact's error
    format: one line naming the (sub)command and what is wrong, and a hint to its --help - not the
    20-line usage dump argparse prints first."""

    def error(self, message: str):
        self.exit(ExitCode.USER_ERROR, f"{self.prog}: error: {safe_text(message)}\n"
                                       f"  hint: `{self.prog} --help` lists its flags\n")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="facefact",
        description="One photo of a person -> new portraits from a text prompt (FaceChain-FACT).",
    )
    parser.add_argument("--version", action="version", version=f"facefact {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        module_name = f"facefact.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(subparsers)
    for command in subparsers.choices.values():
        _record_flags(command)
    return parser


def _record_flags(parser) -> None:
    """Each (sub)command knows its flags by setting name (`dtype` -> `--dtype`), so an error that
    names a setting can name the flag the user typed (run_command)."""
    flags = {a.dest: list(a.option_strings) for a in parser._actions if a.option_strings}
    parser.set_defaults(_flags=flags, _parser=parser)  # the innermost sub-command's wins
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _record_flags(sub)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code is one of `ExitCode` (see facefact.cli.exit_codes)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)  # a bad flag value exits USER_ERROR (2), one line
    if unknown:  # named by the sub-command that was given it, not by the top-level usage
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.USER_ERROR
    with sigterm_as_interrupt():
        code = run_command(args, list(sys.argv[1:] if argv is None else argv))
    if argv is None:  # the program itself (tests pass argv): the process ends next
        # Skip the final garbage collection over every object torch and the models made: it took 1.5-3 s
        # on a busy 2-core machine (0.3 s frozen), most of the time `serve` or `worker` took to stop.
        gc.freeze()
    return code


def run_command(args, argv: list[str] = ()) -> int:
    name = f"facefact {args.command}"
    try:
        return int(args.func(args) or 0)
    except FacefactError as err:
        print(f"{name}: error: {safe_text(with_flag(err, args, [str(a) for a in argv]))}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except MemoryError:
        print(f"{name}: error: out of memory; lower the image size, batch size "
              "or number of images, or use a smaller dtype", file=sys.stderr)
        return ExitCode.OUT_OF_MEMORY
    except RuntimeError as err:  # torch reports CUDA OOM as a RuntimeError subclass
        if "out of memory" in str(err).lower():
            print(f"{name}: error: the accelerator ran out of memory ({err}).\n"
                  "  hint: lower --size/--batch-size/-n, use --dtype float16, or enable CPU offload",
                  file=sys.stderr)
            return ExitCode.OUT_OF_MEMORY
        raise
    except OSError as err:
        words = os_error_words(err)
        if words is None:
            raise
        print(f"{name}: error: {safe_text(words)}", file=sys.stderr)
        return ExitCode.USER_ERROR


def with_flag(err: FacefactError, args, argv: list[str]) -> str:
    """The error's text with the flag of the setting it names, when this command has one and the text
    does not say it already: leading the message when the user gave that flag (`--dtype: ...`), else
    on a line of its own (a missing setting, a config-file value). The library names settings; only
    the CLI names flags."""
    names = (getattr(args, "_flags", None) or {}).get(err.setting or "", [])
    text = str(err)
    if not names or any(name in text for name in names):
        return text
    given = [name for name in names if any(a == name or a.startswith(name + "=") for a in argv)]
    return f"{given[0]}: {text}" if given else f"{text}\n  flag: {names[0]}"


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a container stop, `kill`) is handled as Ctrl-C: KeyboardInterrupt unwinds the
    command, temporary files are removed and the exit code is INTERRUPTED. The previous handler
    is restored afterwards (main() may be called in-process, e.g. by tests)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
