"""The one error class for what a user did wrong.

The CLI turns a `UserError` (and only that) into one line on stderr and a non-zero exit;
anything else is a bug and keeps its traceback. It has no dependencies, so every layer
(spec, plan, store, dispatch, fit) can raise it without import cost.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input: a spec, profile, CLI argument, CSV, store or run file. The message is one
    line naming the field or file."""
