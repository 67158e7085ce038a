"""Typed experiment configuration: YAML loading, ``--set`` overrides and validation.

An experiment is one YAML file. Its ``experiment.task`` names the task whose schema (a tree of
:class:`Section` models) validates the rest. Unknown keys and wrong types are errors that name the
key path, what was expected and the closest valid key. Library functions never take these objects:
only the task and CLI layers read config (STYLE.md, "Config is data").

Examples
--------
>>> from geodl.config import Section, validate
>>> class Train(Section):
...     epochs: int = 10
>>> validate({"epochs": 3}, Train).epochs
3
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from geodl.errors import ConfigError

M = typing.TypeVar("M", bound=BaseModel)

__all__ = [
    "Section",
    "apply_overrides",
    "blame",
    "config_digest",
    "dump_yaml",
    "read_yaml",
    "validate",
]


_BOOL, _TIMESTAMP = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars where YAML 1.1 surprises: ``1e-3`` is a float (1.1 demands
    ``1.0e-3``), only ``true``/``false`` are booleans (1.1 also reads ``no``, ``on``, ``y``...), and
    dates stay text (an unquoted ``2010-01-01`` in a split is the date string the split expects,
    not a ``datetime.date``)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    """A mapping whose keys are unique: YAML keeps the last of two equal keys, so a section
    written twice would silently lose the first one's settings."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            twice = key in seen
        except TypeError:  # an unhashable key: the constructor below reports it
            continue
        if twice:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key '{key}' is given twice (first on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.construct_mapping = _construct_mapping  # type: ignore[method-assign]


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class Section(BaseModel):
    """Base of every config section: strict types, no unknown keys, immutable once validated.

    Strict mode is deliberate: a quoted ``"10"`` for an integer is a mistake in YAML, not something to
    coerce silently. Integers are accepted where floats are expected.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; missing files and syntax errors raise :class:`ConfigError`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"config file '{path}' is a directory; pass the path of an experiment YAML file "
            "in it (see configs/ for examples)"
        )
    if not path.is_file():
        raise ConfigError(
            f"config file '{path}' not found; pass the path of an experiment YAML file "
            "(see configs/ for examples)"
        )
    try:
        raw = _load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file '{path}' is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start}); pass an experiment YAML file (a data file goes in data.path)"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(
            f"{path}: YAML syntax error at {where}: {exc.problem}; fix the file and retry"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}"
        )
    return raw


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The Section model inside ``annotation`` (also through ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _section_type(arg)
            if found is not None:
                return found
    return None


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_mapping(a) for a in typing.get_args(annotation))
    return origin is dict or annotation is dict


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return "valid keys: " + ", ".join(sorted(choices))


def _check_path(schema: type[BaseModel], parts: list[str]) -> None:
    """Raise :class:`ConfigError` unless ``parts`` is a key path of ``schema``."""
    model: type[BaseModel] | None = schema
    for i, part in enumerate(parts):
        if model is None:
            raise ConfigError(
                f"--set {'.'.join(parts)}: '{'.'.join(parts[:i])}' is a value, not a section"
            )
        fields = model.model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or "top level"
            raise ConfigError(
                f"--set {'.'.join(parts)}: unknown key '{part}' in {where}; "
                f"{_suggest(part, list(fields))}"
            )
        annotation = fields[part].annotation
        if _is_mapping(annotation):
            return  # free-form mapping: any sub-key is allowed
        model = _section_type(annotation)


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], schema: type[BaseModel]
) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key.path=value`` overrides applied (values parsed as YAML).

    Every path must exist in ``schema`` (not only in the file), so a typo is caught even for a key the
    file leaves at its default.
    """
    out = json.loads(json.dumps(raw))  # deep copy of plain YAML data
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}': expected KEY.PATH=VALUE, e.g. train.epochs=5")
        parts = key.strip().split(".")
        _check_path(schema, parts)
        try:
            value = _load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set '{item}': value is not a valid YAML scalar") from None
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _model_at(schema: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = schema
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _section_type(model.model_fields[part].annotation)
    return model


def _describe_error(err: dict[str, Any], schema: type[BaseModel]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    path = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(schema, loc[:-1])
        hint = _suggest(str(loc[-1]), list(parent.model_fields)) if parent else ""
        return f"unknown key '{path}'; {hint}".rstrip("; ")
    if kind == "missing":
        return f"missing required key '{path}'"
    value = err.get("input")
    msg = err["msg"].replace("Input should be", "expected").replace("Value error, ", "")
    msg = msg.replace("List should have", "expected").replace(" after validation", "")
    if kind in ("model_type", "dict_type"):  # not "a valid dictionary or instance of TrainSection"
        msg = "expected a section (a mapping of keys)"
    if kind == "bool_type" and isinstance(value, str):
        msg += " (YAML booleans are true and false)"
    if kind == "value_error" and isinstance(value, dict):
        # a rule across a section's keys: its message names them; the section is no value to show
        if not loc:
            return msg
        for name in (path, str(loc[-1])):  # a message that names its section already ("unet: ")
            if msg.startswith(f"{name}: "):
                msg = msg[len(name) + 2 :]
                break
        return f"section '{path}': {msg}"
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    return f"key '{path}': {msg}, got {shown} ({type(value).__name__})"


def validate(
    raw: dict[str, Any], schema: type[M], source: str = "config", overrides: Sequence[str] = ()
) -> M:
    """Validate plain data against ``schema``; errors become one-line :class:`ConfigError`.

    An error at a key that one of ``overrides`` (``KEY=VALUE`` of ``--set``) set is blamed on
    that ``--set``, not on the file ``source``."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe_error(errors[0], schema)
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        loc = ".".join(
            str(p) for p in errors[0].get("loc", ()) if not str(p).startswith("function-")
        )
        raise ConfigError(f"{blame(source, overrides, loc, first)}: {first}{more}") from None


def blame(source: str, overrides: Sequence[str], loc: str, message: str) -> str:
    """Who caused an error at key path ``loc`` (empty: a check across sections, whose
    ``message`` names its keys): the last ``--set KEY=VALUE`` of ``overrides`` that set that
    key, a key inside it or a section around it, else the file ``source``."""
    for item in reversed(list(overrides)):  # the last --set of a key is the one in effect
        key = item.partition("=")[0].strip()
        if not key:
            continue
        if loc and (loc == key or loc.startswith(key + ".") or key.startswith(loc + ".")):
            return f"--set {item}"
        if not loc and re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", message):
            return f"--set {item}"
    return source


def dump_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML (every default filled in)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_digest(data: Any) -> str:
    """Stable SHA-256 of plain data (dicts sorted by key)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
