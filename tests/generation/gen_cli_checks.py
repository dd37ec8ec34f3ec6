"""Checks shared by the CLI tests of this folder (imported by name, like tests/evaluation/eval_fakes.py)."""
from __future__ import annotations


def fails(result, *phrases, max_lines: int | None = None) -> str:
    """`result` = (exit code, stdout, stderr) of a CLI run that must fail cleanly: exit code 2, no traceback,
    every phrase in stderr (and at most `max_lines` lines of it, when given). Returns stderr."""
    code, out, err = result
    assert code == 2, (out, err)
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, err
    if max_lines is not None:
        assert len(err.strip().splitlines()) <= max_lines, err
    return err
