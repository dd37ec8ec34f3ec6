"""Help formatting shared by the sub-commands."""
from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter without its noise: a default is shown once, and only
    when it says something - not for flags whose help already names their default, not "None" for
    settings that are simply absent, not "False" for on/off switches."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is False or default == []
                or default is argparse.SUPPRESS or action.nargs == 0):
            return text
        return f"{text} (default: %(default)s)"
