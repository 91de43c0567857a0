"""Build dataclasses from YAML mappings, rejecting unknown keys and wrong types with the key named.

DeepSpeed and the HF Trainer silently ignore a misspelt option; a recipe read through `from_mapping`
does not. Field help lives in `field(metadata={"help": ...})` so that `reference()` can print it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin, get_type_hints

from bayling_local.errors import UsageError


class RecipeError(UsageError):
    """A recipe that cannot be used as written; the message names the key and the fix."""


def from_mapping(cls: type, data: Any, where: str, origin: str) -> Any:
    """An instance of dataclass `cls` from `data`; `where` is the key path, `origin` the file."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"{origin}: {where or 'the recipe'} must be a mapping of keys, got {_shown(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    _reject_unknown_keys(data, fields, where, origin)
    hints = get_type_hints(cls)
    values = {name: _convert(hints[name], data[name], _join(where, name), origin) for name in data}
    missing = [name for name, f in fields.items() if name not in values and _is_required(f)]
    if missing:
        raise RecipeError(f"{origin}: missing key '{_join(where, missing[0])}' ({help_of(fields[missing[0]])})")
    return cls(**values)


def _reject_unknown_keys(data: Mapping, fields: Mapping, where: str, origin: str) -> None:
    for key in data:
        if key in fields:
            continue
        close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(fields)}"
        raise RecipeError(f"{origin}: unknown key '{_join(where, str(key))}'; {hint}")


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _convert(hint: Any, value: Any, where: str, origin: str) -> Any:
    origin_type = get_origin(hint)
    if origin_type in (typing.Union, types.UnionType):
        return _convert_union(hint, value, where, origin)
    if origin_type is Literal:
        return _convert_literal(hint, value, where, origin)
    if origin_type is list:
        return _convert_list(hint, value, where, origin)
    if origin_type is dict:
        return _convert_dict(hint, value, where, origin)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where, origin)
    return _convert_scalar(hint, value, where, origin)


def _convert_union(hint: Any, value: Any, where: str, origin: str) -> Any:
    options = [option for option in get_args(hint) if option is not type(None)]
    if value is None:
        if type(None) in get_args(hint):
            return None
        raise RecipeError(f"{origin}: {where} must not be empty")
    errors = []
    for option in options:
        try:
            return _convert(option, value, where, origin)
        except RecipeError as error:
            errors.append(error)
    raise errors[0]


def _convert_literal(hint: Any, value: Any, where: str, origin: str) -> Any:
    allowed = get_args(hint)
    if value not in allowed:
        raise RecipeError(f"{origin}: {where} must be one of {', '.join(map(str, allowed))}; got {_shown(value)}")
    return value


def _convert_list(hint: Any, value: Any, where: str, origin: str) -> list:
    (item_type,) = get_args(hint)
    if not isinstance(value, list):
        raise RecipeError(f"{origin}: {where} must be a list, got {_shown(value)}")
    return [_convert(item_type, item, f"{where}[{index}]", origin) for index, item in enumerate(value)]


def _convert_dict(hint: Any, value: Any, where: str, origin: str) -> dict:
    _, value_type = get_args(hint)
    if not isinstance(value, Mapping):
        raise RecipeError(f"{origin}: {where} must be a mapping, got {_shown(value)}")
    return {str(key): _convert(value_type, item, _join(where, str(key)), origin) for key, item in value.items()}


def _convert_scalar(hint: Any, value: Any, where: str, origin: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads `2e-5` (no dot) as a string
        except ValueError:
            pass
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise RecipeError(f"{origin}: {where} must be {_type_name(hint)}, got {_shown(value)}")


def _type_name(hint: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def help_of(f: dataclasses.Field) -> str:
    """The help text of a field (its `metadata['help']`)."""
    return f.metadata.get("help", "")


def reference(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key path, default, help) for every field of `cls` and its nested dataclasses."""
    rows = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        path = _join(prefix, f.name)
        rows.append((path, _default_text(f), help_of(f)))
        nested = _nested_dataclass(hints[f.name])
        if nested is not None:
            rows += reference(nested, path + ("[]" if get_origin(hints[f.name]) is list else ""))
    return rows


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "(required)"


def _nested_dataclass(hint: Any) -> type | None:
    candidates = [hint, *get_args(hint)]
    for candidate in candidates:
        if dataclasses.is_dataclass(candidate):
            return candidate
        if get_origin(candidate) is list and dataclasses.is_dataclass(get_args(candidate)[0]):
            return get_args(candidate)[0]
    return None


def to_mapping(instance: Any) -> dict:
    """The plain mapping of a dataclass instance (for saving the recipe beside the output)."""
    return {
        f.name: _plain(getattr(instance, f.name)) for f in dataclasses.fields(instance) if f.init
    }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return to_mapping(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
