"""The config boundary: TOML in, frozen pydantic models out, one clear line on any mistake.

Unknown keys are rejected with the closest valid key (``extra="forbid"`` plus a walk over
the model's fields, so the hint names what the user meant); type and value errors name the
full key path. Past :func:`load_toml` nothing is a dict of strings.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from onnxopt.errors import ConfigError, closest, did_you_mean

M = TypeVar("M", bound=BaseModel)


def registered(names: Callable[[], Iterable[str]], what: str) -> AfterValidator:
    """A validator accepting only the names a registry holds (its keys are the truth).

    Args:
        names: Returns the valid names (called at validation time).
        what: What a name names, for the message (``"sampler"``).
    """

    def check(value: str) -> str:
        valid = list(names())
        if value not in valid:
            raise ValueError(f"unknown {what} {value!r}; {did_you_mean(value, valid)}")
        return value

    return AfterValidator(check)


class StrictModel(BaseModel):
    """Base of every config model: frozen, unknown keys forbidden, floats finite.

    Numbers are declared ``StrictInt`` / ``StrictFloat`` / ``StrictBool`` with the bounds of
    :mod:`onnxopt.config.bounds`: ``"20"``, ``true`` and ``20.0`` are not integers.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False
    )


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_mapping(a) for a in typing.get_args(annotation))
    return origin is dict


def _field_names(model: type[BaseModel]) -> dict[str, str]:
    names = {}
    for name, field in model.model_fields.items():
        names[field.alias or name] = name
    return names


def _check_keys(data: Any, model: type[BaseModel], path: str) -> None:
    if not isinstance(data, dict):
        return
    names = _field_names(model)
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise ConfigError(f"unknown key {where!r}; {did_you_mean(str(key), names)}")
        annotation = model.model_fields[names[key]].annotation
        for sub in _models_in(annotation):
            if _is_mapping(annotation) and isinstance(value, dict):
                for inner_key, inner in value.items():
                    _check_keys(inner, sub, f"{where}.{inner_key}")
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    _check_keys(item, sub, f"{where}[{i}]")
            else:
                _check_keys(value, sub, where)


_SCALAR_TAGS = frozenset(
    {"int", "float", "str", "bool", "none", "constrained-int", "constrained-float"}
)


def _where(loc: tuple, prefix: str) -> tuple[str, str]:
    """The dotted key path of an error location and what it is about (a key or a value).

    pydantic adds union members (``int``, ``literal['auto','NA']``, ``function-after[...]``)
    and ``[key]`` (a mapping's key) to the location; users wrote neither.
    """
    parts: list[str] = []
    about = ""
    for i, part in enumerate(str(p) for p in loc):
        if part == "[key]":
            about = f"key {parts.pop()!r}: " if parts else ""
        elif "[" in part or (part in _SCALAR_TAGS and i == len(loc) - 1 and parts):
            continue
        else:
            parts.append(part)
    path = ".".join(parts)
    return (f"{prefix}{path}" if path else prefix.rstrip(".") or "config"), about


def _format_error(err: ValidationError, prefix: str) -> str:
    errors = err.errors()
    where, about = _where(errors[0]["loc"], prefix)
    # the members of a union fail together at one key: one message listing what it accepts
    messages = []
    for e in errors:
        if _where(e["loc"], prefix)[0] == where:
            text = e["msg"].removeprefix("Value error, ").split(", unable to parse")[0]
            messages += [text] if text not in messages else []
    message = " or ".join(
        [messages[0], *(m.removeprefix("Input should be ") for m in messages[1:])]
    )
    others = len({_where(e["loc"], prefix)[0] for e in errors} - {where})
    extra = f" (and {others} more problems)" if others else ""
    return f"{where}: {about}{message}{_got(errors[0], about)}{extra}"


def _got(error: Any, about: str) -> str:
    """`` (got 'x'; did you mean 'y'?)`` for a scalar the user wrote, else nothing."""
    value = error.get("input")
    if about or error["type"] == "value_error" or not isinstance(value, int | float | str):
        return ""  # our own validators already name the value
    hint = ""
    if error["type"] in ("literal_error", "enum") and isinstance(value, str):
        options = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
        near = closest(value, options)
        hint = f"; did you mean {near[0]!r}?" if near else ""
    return f" (got {value!r:.40}{hint})"


def validate(model: type[M], data: dict[str, Any], *, source: str = "config") -> M:
    """Validate a plain mapping against a config model; errors become one-line ConfigErrors."""
    try:
        _check_keys(data, model, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_format_error(err, '')}") from None


def load_toml(path: Path, model: type[M]) -> M:
    """Read a TOML file and validate it against ``model``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc})") from None
    return validate(model, data, source=str(path))
