"""The JSON round-trip that every frozen config of the diffusion engine shares.

Configs stay plain frozen dataclasses; these functions do the parts that were the same in each:
refusing unknown keys by name, turning a constructor's ``TypeError`` into a :class:`ConfigError`,
and parsing a JSON object with a message that names the config.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from liveface.errors import ConfigError

T = TypeVar("T")


def check_keys(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``dict(data)``, after refusing keys that are not fields of ``cls`` (named in the error)."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"unknown {what} config keys: {', '.join(unknown)}")
    return dict(data)


def build(cls: type[T], data: Mapping[str, Any], what: str) -> T:
    """``cls(**data)`` with unknown keys and missing or mistyped arguments as ConfigError."""
    values = check_keys(cls, data, what)
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"incomplete {what} config ({e})") from e


def parse_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object from ``text``; ConfigError for invalid JSON or another JSON type."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{what} config is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{what} config JSON must be an object")
    return data


def dumps(data: Mapping[str, Any]) -> str:
    """Stable, readable JSON (sorted keys) of a config's ``to_dict``."""
    return json.dumps(data, indent=2, sort_keys=True)
