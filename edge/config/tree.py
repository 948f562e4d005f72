"""Build a frozen dataclass tree from YAML, validated once: unknown keys, wrong types and bad values are
errors that name the key path and the line. Every error of a file is reported at once (ConfigErrors): a key's own
problems, then each section's own checks for sections whose keys were all fine, then the ranges. A section's check
that names one of its keys ("port must be within ...") is reported at that key and its line.

Every number must be finite and within its range (edge/config/bounds.py). The YAML is refused, with a ConfigError
rather than a traceback, when it is nested deeper than MAX_DEPTH. The value of a secret (a key whose name says
password, secret or token) is never repeated in an error: check-config output ends up in logs and tickets.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from pathlib import Path
from typing import Any, Dict, List, Type, TypeVar

import yaml

from edge.config.bounds import BOUNDS, DEFAULT_BOUNDS
from edge.errors import ConfigError

T = TypeVar("T")
MAX_DEPTH = 32
"""Deepest nesting of mappings and lists accepted (the config needs 6)."""
_SECRET_WORDS = ("password", "secret", "token")

_SCALAR_TAGS = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true/false",
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:null": "null",
}


class ConfigErrors(ConfigError):
    """Several config errors at once; `problems` holds one line per error (key path, line, what is wrong)."""

    def __init__(self, problems: List[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(self.problems[0])
        else:
            super().__init__(f"{len(self.problems)} errors:\n  " + "\n  ".join(self.problems))

    def prefixed(self, source: str) -> ConfigErrors:
        return ConfigErrors([f"{source}: {p}" for p in self.problems])


def _problems(exc: ConfigError) -> List[str]:
    return exc.problems if isinstance(exc, ConfigErrors) else [str(exc)]


def _where(path: str, node: yaml.Node) -> str:
    return f"{path or '<top>'} (line {node.start_mark.line + 1})"


def _is_secret(path: str) -> bool:
    key = path.rsplit(".", 1)[-1].lower()
    return any(word in key for word in _SECRET_WORDS)


def _describe(node: yaml.Node, path: str = "") -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = _SCALAR_TAGS.get(node.tag, node.tag)
    return f"{kind} (value not shown)" if _is_secret(path) else f"{kind} ({node.value!r})"


def _scalar(node: yaml.Node, path: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(f"{_where(path, node)}: expected a single value, got {_describe(node, path)}")
    return _construct(node)


def _construct(node: yaml.Node) -> Any:
    """Turn a YAML node into plain Python values with the safe loader's rules."""
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _convert(tp: Any, node: yaml.Node, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        if type(None) in args and isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return None
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], node, path)
    if dataclasses.is_dataclass(tp):
        return build(tp, node, path)  # type: ignore[arg-type]
    if origin in (tuple, list):
        if not isinstance(node, yaml.SequenceNode):
            raise ConfigError(f"{_where(path, node)}: expected a list, got {_describe(node)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(node.value) != len(args):
                raise ConfigError(f"{_where(path, node)}: expected a list of {len(args)} values")
            return tuple(_convert(a, n, f"{path}[{i}]") for i, (a, n) in enumerate(zip(args, node.value)))
        item = args[0] if args else Any
        values, problems = [], []
        for i, n in enumerate(node.value):
            try:
                values.append(_convert(item, n, f"{path}[{i}]"))
            except ConfigError as exc:  # every item's errors, not only the first item's
                problems.extend(_problems(exc))
        if problems:
            raise ConfigErrors(problems)
        return tuple(values) if origin is tuple else values
    if origin is dict:
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(f"{_where(path, node)}: expected a mapping, got {_describe(node)}")
        return {
            str(_scalar(k, path)): _convert(args[1] if args else Any, v, f"{path}.{k.value}") for k, v in node.value
        }
    if origin is typing.Literal:
        value = _scalar(node, path)
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{_where(path, node)}: must be one of {choices}, got {value!r}")
        return value
    if tp is Any:
        return _construct(node)
    value = _scalar(node, path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise ConfigError(f"{_where(path, node)}: must be one of {choices}, got {value!r}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_where(path, node)}: expected true/false, got {_describe(node, path)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{_where(path, node)}: expected an integer, got {_describe(node, path)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{_where(path, node)}: expected a number, got {_describe(node, path)}")
        if not math.isfinite(value):
            raise ConfigError(f"{_where(path, node)}: expected a finite number, got {_describe(node, path)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            quote = " (quote it)" if _is_secret(path) and isinstance(node, yaml.ScalarNode) else ""
            raise ConfigError(f"{_where(path, node)}: expected a string{quote}, got {_describe(node, path)}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{_where(path, node)}: expected a path, got {_describe(node, path)}")
        return Path(value)
    raise TypeError(f"config field {path} has an unsupported type {tp!r}")


def build(cls: Type[T], node: yaml.Node, path: str = "") -> T:
    """Construct dataclass `cls` from a YAML mapping node; every error names `path.key` and its line."""
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{_where(path, node)}: expected a mapping, got {_describe(node)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: Dict[str, Any] = {}
    nodes: Dict[str, yaml.Node] = {}
    problems: List[str] = []
    for key_node, value_node in node.value:
        key = str(key_node.value)
        key_path = f"{path}.{key}" if path else key
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            problems.append(f"{_where(key_path, key_node)}: unknown key; known keys here: {known}")
            continue
        if key in nodes:
            problems.append(f"{_where(key_path, key_node)}: key given twice")
            continue
        nodes[key] = value_node
        try:
            kwargs[key] = _convert(hints[key], value_node, key_path)
        except ConfigError as exc:
            problems.extend(_problems(exc))
    for name, f in fields.items():
        if name not in nodes and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{_where(f'{path}.{name}' if path else name, node)}: required key is missing")
    if problems:  # the section's own checks need every key: they wait until these are fixed
        raise ConfigErrors(problems)
    try:
        built = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        problems.append(_blame(str(exc), path, node, nodes))
    for key, value_node in nodes.items():  # the section's own check first: it says more
        key_path = f"{path}.{key}" if path else key
        if not any(p.startswith(f"{key_path} (") for p in problems):
            problems.extend(_check_bounds(f"{cls.__name__}.{key}", kwargs[key], key_path, value_node))
    if problems:
        raise ConfigErrors(problems)
    return built


def _blame(message: str, path: str, node: yaml.Node, nodes: Dict[str, yaml.Node]) -> str:
    """A section's check as an error at the key it names first ("port must be ...": mqtt.port and its line);
    at the section when it names no key given in the file."""
    first = message.split(" ", 1)[0].rstrip(":")
    if first in nodes:
        rest = message[len(first) :].lstrip(":").lstrip()
        return f"{_where(f'{path}.{first}' if path else first, nodes[first])}: {rest}"
    return f"{_where(path, node)}: {message}"


def _numbers(value: Any) -> typing.Iterator[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _numbers(item)


def _text(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _check_bounds(field_name: str, value: Any, path: str, node: yaml.Node) -> List[str]:
    low, high = BOUNDS.get(field_name, DEFAULT_BOUNDS)
    for number in _numbers(value):
        if not (math.isfinite(number) and low <= number <= high):
            return [f"{_where(path, node)}: must be within {_text(low)}..{_text(high)}, got {number}"]
    return []


def _check_depth(text: str) -> None:
    """Refuse deep nesting from the event stream (no recursion; stops at the first level too deep)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark is not None else "?"
                raise ConfigError(f"line {line}: nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint and where, without the snippet of the line it quotes (it may hold a password)."""
    mark = exc.problem_mark if isinstance(exc, yaml.MarkedYAMLError) else None
    if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
        context = f"{exc.context}, " if exc.context else ""
        return f"{context}{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(exc).splitlines()[0][:200]


def load_yaml_tree(cls: Type[T], text: str, source: str) -> T:
    """Parse YAML text (keeping line numbers) and build `cls` from it; an empty document gives the defaults."""
    try:
        _check_depth(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except ConfigError as exc:
        raise ConfigError(f"{source}: not accepted YAML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not accepted YAML: nested too deep") from None
    if node is None:
        return cls()
    try:
        return build(cls, node)
    except ConfigError as exc:
        raise ConfigErrors(_problems(exc)).prefixed(source) from None
