"""Text from users (prompts, file names, captions) printed to a terminal, escaped.

A prompt or a file name can carry escape sequences (ESC [ ... that recolour, clear or retitle the
terminal) or bidi overrides that display text reversed. Everything the CLI prints that came from
a user goes through :func:`safe_text`, which shows such characters as ``\\x1b``-style escapes.
"""
from __future__ import annotations

import unicodedata

_KEEP = {"\n", "\t"}


def safe_text(text) -> str:
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _KEEP or ch.isprintable() or (ch == " "):
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)
