"""Scoped filters for other libraries' log messages that say nothing to a facefact user.

Each filter is added for the duration of a `with` block and removed after it: no process-wide
change to another library's logging. Real warnings (unexpected LoRA keys, ...) are untouched:
only messages matched by a predicate are dropped.
"""
from __future__ import annotations

import contextlib
import logging
import re
from typing import Callable


def empty_fp32_notice(record: logging.LogRecord) -> bool:
    """diffusers' ModelMixin.to(dtype) warns "modules ... should be kept in float32: []" on every
    cast, also when the list is empty (nothing is kept): noise."""
    return "should be kept in float32: []" in record.getMessage()


def clip_truncation_notice(record: logging.LogRecord) -> bool:
    """diffusers' "part of your input was truncated because CLIP can only handle sequences up to 77
    tokens": facefact's pipelines report the cut text themselves, as a note (once)."""
    return "was truncated because CLIP can only handle" in record.getMessage()


def quotes_a_prompt(record: logging.LogRecord) -> bool:
    """A record that quotes a user's prompt: diffusers' CLIP truncation notice, and facefact's own
    note on the cut part (the pipeline returns it to the caller in `notes` as well)."""
    return clip_truncation_notice(record) or "tokens but the text encoder takes" in record.getMessage()


# Where such records are made: diffusers' and transformers' loggers, and the FACT pipelines' notes.
PROMPT_QUOTING_LOGGERS = ("diffusers", "transformers", "facefact.pipelines.mixin")


@contextlib.contextmanager
def prompts_kept_out_of_logs():
    """For a server while it serves (docs/serving.md: no prompt is logged): records quoting a prompt
    are dropped, from other libraries too; every other record passes. Enter it once the libraries
    are imported (the models loaded): diffusers and transformers make their handlers at import."""
    with contextlib.ExitStack() as stack:
        for name in PROMPT_QUOTING_LOGGERS:
            stack.enter_context(dropped_log_messages(name, quotes_a_prompt))
        yield


def torchvision_fallback_notice(record: logging.LogRecord) -> bool:
    """transformers' "`CLIPImageProcessor` requires torchvision (not installed); falling back to ...Pil":
    facefact never installs torchvision (it uses the PIL processors on purpose), so this says nothing."""
    return "requires torchvision (not installed)" in record.getMessage()


@contextlib.contextmanager
def quiet_transformers_imports():
    """Import diffusers' pipelines (which import transformers' image processors) without the
    torchvision notice. transformers' own handler exists once it is imported, so it is imported first."""
    import transformers  # noqa: F401  (configures the "transformers" logger and its handler)

    with dropped_log_messages("transformers", torchvision_fallback_notice):
        yield


class _Drop(logging.Filter):
    def __init__(self, predicate: Callable[[logging.LogRecord], bool]):
        super().__init__()
        self.predicate = predicate

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.predicate(record)


@contextlib.contextmanager
def dropped_log_messages(logger_name: str, predicate: Callable[[logging.LogRecord], bool]):
    """Drop matching records made by `logger_name` and by its children (through its handlers)."""
    drop = _Drop(predicate)
    logger = logging.getLogger(logger_name)
    targets = [logger, *logger.handlers]
    for target in targets:
        target.addFilter(drop)
    try:
        yield
    finally:
        for target in targets:
            target.removeFilter(drop)


# MediaPipe's C++ start-up lines (TensorFlow Lite, absl, glog INFO / WARNING): written straight to
# file descriptor 2, below Python, so no logging filter sees them.
MEDIAPIPE_NOISE = re.compile(r"^(INFO: Created TensorFlow Lite|WARNING: All log messages before absl::InitializeLog"
                             r"|[IW]\d{4} [\d:. ]+\s*\d+ \S+:\d+\])")


@contextlib.contextmanager
def native_stderr_without(noise: re.Pattern):
    """Run the block with file descriptor 2 written to a temporary file, then copy every line that
    `noise` does not match back to stderr: native libraries' start-up chatter is dropped, and
    anything else written meanwhile (a real error, Python's own stderr) still arrives, only after
    the block. Within the block this process's stderr is that file (the one way to reach C++
    writes to fd 2); it is restored however the block ends."""
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not noise.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
