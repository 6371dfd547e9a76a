"""What every command shares: errors a user can act on become one-line messages."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from brainedge.errors import BrainEdgeError


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a BrainEdgeError into a click error: its message and exit code 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrainEdgeError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper
