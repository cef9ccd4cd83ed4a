"""A config file's text as a YAML document, refused where YAML allows what nothing can use:
duplicate keys, aliases that contain themselves, control characters."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError
from .messages import dotted


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first defined on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_document(text: str, source: str) -> tuple[Any, str]:
    """The YAML document in ``text``, checked for what YAML allows and nothing can use."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, [(where, f"invalid YAML: {exc.problem}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character: its str() spans two lines
        before = text[: exc.position]
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        where = f"line {before.count(chr(10)) + 1}, column {len(before.rsplit(chr(10), 1)[-1]) + 1}"
        raise ConfigError(
            source, [(where, f"invalid YAML: character U+{code:04X} is not allowed")]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [("", f"invalid YAML: {exc}")]) from None
    if data is None:
        data = {}
    loop = _recursion(data, [])
    if loop is not None:
        raise ConfigError(
            source, [(dotted(loop), "invalid YAML: an alias refers to a node that contains it")]
        )
    return data, source


def _recursion(value: Any, path: list[Any], inside: frozenset[int] = frozenset()) -> Any:
    """The path of a node that contains itself (``&a [*a]``), or None: nothing can use one."""
    if not isinstance(value, dict | list):
        return None
    if id(value) in inside:
        return path
    inside = inside | {id(value)}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        found = _recursion(item, [*path, key], inside)
        if found is not None:
            return found
    return None
