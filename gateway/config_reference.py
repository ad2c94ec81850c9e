"""docs/configuration.md, written from the config model itself so it cannot drift.

Every key of :class:`gateway.config.GatewayConfig` is listed with its TOML path, type,
default and meaning. The meaning is the field's ``description``, else the comment beside the
key in ``deploy/gateway.example.toml`` (the example is the other place operators read), so
a key documented in either place is documented here. A test fails when the committed
document differs from what this module writes: after changing the config, run
``python -m gateway.config_reference > docs/configuration.md``.
"""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = _ROOT / "deploy" / "gateway.example.toml"

_HEADER = """\
# Configuration reference

Generated from the config model by `python -m gateway.config_reference` (a test keeps it
current). One TOML file (`fieldgate run --config FILE`), every key optional. Environment
variables override the file: `FIELDGATE_` + the key path in upper case with `__` between
levels, e.g. `FIELDGATE_MQTT__URL=mqtt://broker:1883`. An invalid value stops start-up with
the key path and the reason (`fieldgate run --check` validates without starting). An
annotated example is `deploy/gateway.example.toml`.

Secrets (marked *secret*) are never printed by `--check` or logged.
"""


@dataclass(frozen=True)
class Key:
    path: str
    type: str
    default: str
    meaning: str


def example_comments(text: str) -> dict[str, str]:
    """``section.key`` -> the comment on its line in the example config (commented-out keys too)."""
    comments: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        header = re.match(r"^#?\s*\[\[?([A-Za-z0-9_.]+)\]\]?\s*(#\s*(.*))?$", line)
        if header:
            section = header.group(1)
            if header.group(3):
                comments.setdefault(section, header.group(3).strip())
            continue
        entry = re.match(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*[^#]*#\s*(.+)$", line)
        if entry:
            key = f"{section}.{entry.group(1)}" if section else entry.group(1)
            comments.setdefault(key, entry.group(2).strip())
    return comments


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is type(None):
        return "none"
    if origin is Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is tuple:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"table of {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, SecretStr):
        return "string (*secret*)"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.is_required():
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, tuple | list):
        return "`[]`" if not value else "`[" + ", ".join(_scalar(v) for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"{len(value)} built-in entries"
    return f"`{_scalar(value)}`"


def _scalar(value: Any) -> str:
    if isinstance(value, Path) and value.is_absolute() and value.is_relative_to(_ROOT):
        # A default inside the source tree (the shipped model) is shown relative to it, so
        # the reference does not depend on where the tree was checked out (CI uses a clone).
        value = value.relative_to(_ROOT)
    return f'"{value}"' if isinstance(value, str | Path) else str(value)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _models_in(a)]


def walk(model: type[BaseModel], prefix: str, comments: dict[str, str]) -> Iterator[Key]:
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        annotation = field.annotation
        origin = get_origin(annotation)
        meaning = field.description or _comment_for(path, comments)
        nested = _models_in(annotation)
        if nested and origin is None:
            yield Key(path, "table", "", meaning or _summary(nested[0]))
            yield from walk(nested[0], path, comments)
        elif nested and origin is tuple:
            yield Key(path, "list of tables (`[[" + path + "]]`)", _default(field), meaning)
            yield from walk(nested[0], f"{path}[]", comments)
        elif nested and origin is dict:
            yield Key(path, "tables by name (`[" + path + ".NAME]`)", _default(field), meaning)
            yield from _variants(nested, f"{path}.NAME", comments)
        else:
            yield Key(path, _type_name(annotation), _default(field), meaning)


def _summary(model: type[BaseModel]) -> str:
    """The first sentence of a section model's docstring."""
    doc = " ".join((model.__doc__ or "").split())
    return doc.split(". ")[0].rstrip(".")


def _comment_for(path: str, comments: dict[str, str]) -> str:
    """The example's comment for ``path``; ``NAME`` matches any table name used there."""
    plain = path.replace("[]", "")
    if plain in comments:
        return comments[plain]
    if ".NAME." in plain:
        pattern = re.compile(re.escape(plain).replace(r"\.NAME\.", r"\.[^.]+\."))
        return next((text for key, text in comments.items() if pattern.fullmatch(key)), "")
    return ""


def _variants(
    variants: list[type[BaseModel]], prefix: str, comments: dict[str, str]
) -> Iterator[Key]:
    """Keys of a table that is one of several kinds (``kind = "threshold"``...), each once."""
    kinds: dict[str, list[str]] = {}
    first: dict[str, Key] = {}
    for variant in variants:
        tag = variant.model_fields.get("kind")
        kind = str(get_args(tag.annotation)[0]) if tag is not None else ""
        for key in walk(variant, prefix, comments):
            first.setdefault(key.path, key)
            kinds.setdefault(key.path, []).append(kind)
    for path, key in first.items():
        only = kinds[path]
        if path.endswith(".kind"):
            names = " \\| ".join(f'`"{k}"`' for k in only)
            yield Key(key.path, names, "required", key.meaning)
            continue
        if len(variants) > 1 and len(only) < len(variants):
            yield Key(key.path, key.type, key.default, f"(kind {', '.join(only)}) {key.meaning}")
        else:
            yield key


def render() -> str:
    from gateway.config import GatewayConfig

    comments = example_comments(EXAMPLE.read_text(encoding="utf-8"))
    out = [_HEADER]
    top: list[Key] = []
    sections: dict[str, list[Key]] = {}
    for key in walk(GatewayConfig, "", comments):
        head = key.path.split(".", 1)[0]
        if "." not in key.path and key.type != "table":
            top.append(key)
        elif "." in key.path:
            sections.setdefault(head, []).append(key)
    out.append(_table("Top level", top))
    for head, keys in sections.items():
        out.append(_table(f"`[{head}]`", keys))
    return "\n".join(out)


def _table(title: str, keys: list[Key]) -> str:
    rows = [f"## {title}\n", "| key | type | default | meaning |", "|---|---|---|---|"]
    for key in keys:
        # A docstring wrapped over lines would end the table row at the first newline.
        meaning = " ".join(key.meaning.split()).replace("|", "\\|")
        rows.append(f"| `{key.path}` | {key.type} | {key.default} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
