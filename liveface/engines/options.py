"""Per-session engine options: the checks every engine makes of what ``open`` is given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from liveface.errors import BadInputError


def session_options(
    options: Mapping[str, Any] | None, known: Sequence[str], engine: str
) -> Mapping[str, Any]:
    """``options`` (None: none), refused if it names an option ``engine`` does not know.

    Raises:
        BadInputError: an unknown option; the message names it.
    """
    options = options or {}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BadInputError(f"unknown {engine} option(s) {', '.join(unknown)}")
    return options


def seed_option(options: Mapping[str, Any], default: int) -> int:
    """The session's ``seed`` option (``default`` when absent).

    Raises:
        BadInputError: not a non-negative int.
    """
    seed = options.get("seed", default)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BadInputError("option seed must be a non-negative int")
    return seed


def bool_option(options: Mapping[str, Any], name: str, default: bool) -> bool:
    """The bool option ``name`` (``default`` when absent).

    Raises:
        BadInputError: not a bool.
    """
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise BadInputError(f"option {name} must be a bool")
    return value
