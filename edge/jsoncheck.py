"""Incoming JSON read without trusting it, and schema errors described without repeating what was sent.

`load_json` refuses, before or while decoding: nesting deeper than MAX_DEPTH (json.loads would recurse into a
RecursionError), NaN/Infinity and numbers too large for a float (1e400 would become inf), and integers longer
than Python allows. `strict_validator` makes JSON Schema's "integer" mean a JSON integer (jsonschema also counts
1.0 and 1e300 as integers). `describe` names an error's path and the rule it broke, never the value: a refused
gallery command must not copy names or embeddings into the log and the result message.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from array import array
from typing import Any, List, Tuple

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted (our payloads need 6)."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


_RULES = {
    "const": "must be {rule}",
    "enum": "must be one of {rule}",
    "pattern": "must match {rule}",
    "format": "must be a valid {rule}",
    "minimum": "must be >= {rule}",
    "maximum": "must be <= {rule}",
    "exclusiveMinimum": "must be > {rule}",
    "exclusiveMaximum": "must be < {rule}",
    "multipleOf": "must be a multiple of {rule}",
    "minLength": "must have at least {rule} characters",
    "maxLength": "must have at most {rule} characters",
    "minItems": "must have at least {rule} items",
    "maxItems": "must have at most {rule} items",
    "uniqueItems": "items must be unique",
    "minProperties": "must have at least {rule} properties",
    "maxProperties": "must have at most {rule} properties",
    "contentEncoding": "must be {rule}",
    "oneOf": "matches none (or more than one) of the allowed forms",
    "anyOf": "matches none of the allowed forms",
    "not": "matches a form that is not allowed",
}
"""The rule each JSON Schema keyword states, filled in with the schema's (never the payload's) value."""


class JsonRefused(ValueError):
    """The bytes are not JSON this program accepts; the message says why without quoting them."""


def nesting_depth(raw: bytes) -> int:
    """The deepest bracket nesting of a JSON text, strings left out (linear time, no recursion)."""
    skeleton = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET).translate(_STEP)
    return max(itertools.accumulate(array("b", skeleton)), default=0)


def _refuse_constant(name: str) -> Any:
    raise JsonRefused(f"JSON with {name} (not a JSON number)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused("JSON number too large for a float")
    return value


def load_json(raw: bytes) -> Any:
    """UTF-8 JSON text -> Python value, or JsonRefused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"not UTF-8 JSON ({exc.reason} at byte {exc.start})") from None
    depth = nesting_depth(raw)
    if depth > MAX_DEPTH:
        raise JsonRefused(f"JSON nested {depth} levels deep, more than {MAX_DEPTH}")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except JsonRefused:
        raise
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"not UTF-8 JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError:  # an integer of thousands of digits
        raise JsonRefused("JSON number with too many digits") from None
    except RecursionError:  # the depth check should have caught it
        raise JsonRefused(f"JSON nested more than {MAX_DEPTH} levels deep") from None


def _is_json_integer(_checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def strict_validator(schema: Any) -> Any:
    """A jsonschema validator for `schema` (checked) where only JSON integers are integers."""
    import jsonschema

    base = jsonschema.validators.validator_for(schema)
    base.check_schema(schema)
    cls = jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine("integer", _is_json_integer))
    return cls(schema, format_checker=base.FORMAT_CHECKER)


def _short(rule: Any) -> str:
    text = json.dumps(rule, ensure_ascii=False)
    return text if len(text) <= 120 else text[:117] + "..."


def _path(parts: Any) -> str:
    shown = [str(p) if isinstance(p, int) or _SAFE_NAME.match(str(p)) else "<key>" for p in parts]
    return "/".join(shown) or "(top level)"


def _rule(error: Any) -> str:
    """What the schema asks for at the error's place: the rule's own (schema) values, never the instance's."""
    kind, rule, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        missing: List[str] = [p for p in rule if isinstance(instance, dict) and p not in instance]
        return f"missing required property {missing[0]!r}" if missing else "missing a required property"
    if kind == "additionalProperties":
        extra = sorted(k for k in instance if isinstance(k, str)) if isinstance(instance, dict) else []
        allowed = set((error.schema or {}).get("properties", {}))
        names = [k for k in extra if k not in allowed and _SAFE_NAME.match(k)][:3]
        return "properties not allowed here" + (f": {', '.join(names)}" if names else "")
    if kind == "type":
        return f"must be of type {' or '.join(rule) if isinstance(rule, list) else rule}"
    if kind in ("const", "enum", "pattern"):
        rule = _short(rule)
    template = _RULES.get(kind, "breaks the schema rule {kind!r}")
    return template.format(rule=rule, kind=kind)


def error_order(error: Any) -> List[Tuple[int, Any]]:
    """Sort key: errors by their path, array indexes in number order (a path mixes ints and strings)."""
    return [(0, p) if isinstance(p, int) else (1, str(p)) for p in error.absolute_path]


def describe(error: Any) -> str:
    """'<json path>: <rule broken>' for a jsonschema ValidationError, without the offending value."""
    return f"{_path(error.absolute_path)}: {_rule(error)}"
