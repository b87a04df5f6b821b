"""A small validator for the JSON headers of the ZeroMQ protocol (no dependency).

A schema maps field names to :class:`Field` s. Validation is strict: unknown fields, missing
required fields, wrong types and out-of-range values are all refused with a message that names the
field, so a typo in a client (``"sesion"``) is reported instead of silently ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from liveface.errors import BadInputError

#: Largest integer a JSON number carries exactly in every common implementation (2**53 - 1).
MAX_JSON_INT = 2**53 - 1


class ProtocolError(BadInputError):
    """A message broke the protocol; ``code`` is one of :class:`ErrorCode` 's values.

    ``req`` is the request id of the offending message when its header carried a usable one, so
    the error reply can be matched to the request.
    """

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.req: int | None = None


@dataclass(frozen=True)
class Field:
    """One header field.

    Attributes:
        kind: ``"int"``, ``"float"`` (ints accepted), ``"bool"``, ``"str"``, ``"object"`` or
            ``"list"``.
        required: the field must be present.
        nullable: ``null`` is accepted (as "not given").
        lo, hi: inclusive bounds for numbers; for ``str``/``list``/``object``, bounds on the length.
        choices: the only accepted values (strings).
    """

    kind: str
    required: bool = False
    nullable: bool = False
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None


Schema = Mapping[str, Field]

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "object": (dict,),
    "list": (list,),
}


def _check(name: str, spec: Field, value: Any, where: str) -> None:
    if value is None:
        if spec.nullable:
            return
        raise ProtocolError("bad_message", f"{where}: {name!r} must not be null")
    # bool is an int in Python; a JSON true is never a number here (and 1 is never a bool).
    is_bool = isinstance(value, bool)
    if (spec.kind == "bool") != is_bool or not isinstance(value, _PY_TYPES[spec.kind]):
        raise ProtocolError("bad_message", f"{where}: {name!r} must be of type {spec.kind}")
    v: Any = value  # the isinstance check above narrowed ``value`` to ``object``
    if spec.kind == "float" and not math.isfinite(v):
        raise ProtocolError("bad_message", f"{where}: {name!r} must be a finite number")
    size: float | None = None
    if spec.kind in ("int", "float"):
        size = v
    elif spec.kind in ("str", "list", "object"):
        size = len(v)
    if size is not None:
        if spec.lo is not None and size < spec.lo:
            raise ProtocolError("bad_message", f"{where}: {name!r} is below {spec.lo:g}")
        if spec.hi is not None and size > spec.hi:
            raise ProtocolError("bad_message", f"{where}: {name!r} is above {spec.hi:g}")
    if spec.choices is not None and value not in spec.choices:
        raise ProtocolError(
            "bad_message", f"{where}: {name!r} must be one of {', '.join(spec.choices)}"
        )


def validate(header: Any, schema: Schema, where: str) -> dict[str, Any]:
    """Check ``header`` against ``schema``; returns it as a dict with nulls removed.

    Raises:
        ProtocolError: ``bad_message`` naming the first offending field.
    """
    if not isinstance(header, dict):
        raise ProtocolError("bad_message", f"{where}: the header must be a JSON object")
    unknown = sorted(str(k) for k in header if k not in schema)
    if unknown:
        raise ProtocolError("bad_message", f"{where}: unknown field(s) {', '.join(unknown)}")
    for name, spec in schema.items():
        if name not in header:
            if spec.required:
                raise ProtocolError("bad_message", f"{where}: missing field {name!r}")
            continue
        _check(name, spec, header[name], where)
    return {k: v for k, v in header.items() if v is not None}
