"""Strict JSON out of any value a request body or a recording held: what orjson refuses
(integers beyond 64 bits, nesting beyond 254 levels, NaN and infinities as Python's json reads
them) is written by Python's json instead, nesting cut off with a note, NaN and infinities as
text, anything else escaped to ASCII. Used for the admin API's answers and for the near misses
the request journal keeps as JSON text."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson


def json_bytes(value: Any) -> bytes:
    """``value`` as strict JSON. A near miss shows values from request bodies as they came,
    which may hold what orjson refuses (integers beyond 64 bits, nesting beyond 254 levels, NaN
    and infinities as Python's json reads them): then Python's json writes it, nesting cut off
    with a note, NaN and infinities as text, anything else escaped to ASCII."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(_strict_json(value, _JSON_DEPTH), separators=(",", ":")).encode()


_JSON_DEPTH = 200
_TOO_DEEP = "(JSON nested too deeply to show)"


def _strict_json(value: Any, depth: int) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, (dict, list)) and depth <= 0:
        return _TOO_DEEP
    if isinstance(value, dict):
        return {key: _strict_json(item, depth - 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict_json(item, depth - 1) for item in value]
    return value


def json_value(text: bytes) -> Any:
    """The value of JSON that ``json_bytes`` wrote. Python's json reads it exactly (orjson
    would read an integer beyond 64 bits as a float)."""
    return json.loads(text)
