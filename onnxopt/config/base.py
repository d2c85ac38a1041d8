"""The config boundary: TOML in, frozen pydantic models out, one clear line on any mistake.

Unknown keys are rejected with the closest valid key (``extra="forbid"`` plus a walk over
the model's fields, so the hint names what the user meant); type and value errors name the
full key path. Past :func:`load_toml` nothing is a dict of strings.
"""

from __future__ import annotations

import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from onnxopt.errors import ConfigError, did_you_mean

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model: frozen, unknown keys forbidden."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


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


def _format_error(err: ValidationError, prefix: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "config"
    message = first["msg"].removeprefix("Value error, ")
    extra = f" (and {len(err.errors()) - 1} more problems)" if len(err.errors()) > 1 else ""
    return f"{where}: {message}{extra}"


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
