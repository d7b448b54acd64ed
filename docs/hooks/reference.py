"""MkDocs hook: the reference pages generated from the code each time the site is built.

A hook, not a plugin: the stub pages (`reference/cli.md`, `reference/configuration.md`) stay
readable on GitHub, their `<!-- generated: NAME -->` marker is replaced by tables built from the
argparse parsers and the pydantic models, and the OpenAPI document is added to the site as a
file. Nothing generated is committed, so the pages cannot drift from the code.
"""

from __future__ import annotations

import argparse
import enum
import html
import json
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

OPENAPI = "reference/openapi.json"
BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, OPENAPI, content=openapi_json()))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    for name, render in GENERATED.items():
        marker = f"<!-- generated: {name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown


def openapi_json() -> str:
    """The API's document as `GET /openapi.json` serves it with an API key set. The model loads
    only when a server starts, so the path needs no trained model."""
    from cardamage.serve.app import create_app
    from cardamage.serve.settings import ServeSettings

    settings = ServeSettings(model=Path("not-loaded"), api_key="documented")
    return json.dumps(create_app(settings).openapi(), indent=2)


# --- CLI ---------------------------------------------------------------------------------------


def cli_reference() -> str:
    from cardamage.cli import build_parser
    from cardamage.console import build_parser as console_parser

    return "\n".join(
        [
            *_parser_md(build_parser(), "cardamage", 2),
            *_parser_md(console_parser(), "python main.py", 2),
        ]
    )


def _parser_md(
    parser: argparse.ArgumentParser, prog: str, level: int, about: str = ""
) -> list[str]:
    lines = [f"{'#' * level} `{prog}`", "", _cell(parser.description or about), ""]
    for group in parser._action_groups:
        rows = [_action_row(a, prog) for a in group._group_actions if _documented(a)]
        if rows:
            lines += [
                f"**{group.title}**",
                "",
                "| argument | default | what |",
                "| --- | --- | --- |",
            ]
            lines += [*rows, ""]
    for sub in parser._actions:
        if isinstance(sub, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in sub._choices_actions}
            for name, child in sub.choices.items():
                lines += _parser_md(child, f"{prog} {name}", level + 1, helps.get(name, ""))
    return lines


def _documented(action: argparse.Action) -> bool:
    return not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)


def _action_row(action: argparse.Action, prog: str) -> str:
    name = ", ".join(action.option_strings) or action.metavar or action.dest
    if action.option_strings and action.nargs != 0:
        name += f" {action.metavar or action.dest.upper()}"
    default = action.default
    shown = "" if default in (None, False, argparse.SUPPRESS) else f"`{default}`"
    text = action.help % {**vars(action), "prog": prog} if action.help else ""
    return f"| `{name}` | {shown} | {_cell(text)} |"


# --- configuration -----------------------------------------------------------------------------


def config_reference() -> str:
    from cardamage.cli import build_parser
    from cardamage.config import FLAT_KEYS, AppConfig, TrainConfig

    train = _subparser(build_parser(), "train")
    options = {a.dest: a.option_strings[0] for a in train._actions if a.option_strings}
    flags = {f"{s}.{f}": options[flat] for flat, (s, f) in FLAT_KEYS.items() if flat in options}
    lines = ["## Train config (`cardamage train --config FILE`)", ""]
    lines += _model_md(TrainConfig, "", flags, 3)
    lines += ["## Application config (`application_config.json`)", ""]
    lines += _model_md(AppConfig, "", {}, 3)
    return "\n".join(lines)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _model_md(
    model: type[BaseModel], prefix: str, flags: Mapping[str, str], level: int
) -> list[str]:
    """One table of the model's fields, then one section per field that is itself a model."""
    lines = [_cell((model.__doc__ or "").strip()), ""] if model.__doc__ else []
    lines += ["| key | type | default | flag | what |", "| --- | --- | --- | --- | --- |"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        inner = _inner_model(field.annotation)
        if inner is not None:
            nested.append((key + ("" if inner is field.annotation else "[]"), inner))
        flag = f"`{flags[key]}`" if key in flags else ""
        lines.append(
            f"| `{key}` | {_cell(_type_name(field.annotation) + _bounds(field))} | "
            f"{_default(field, inner)} | {flag} | {_cell(field.description or '')} |"
        )
    lines.append("")
    for key, inner in nested:
        lines += [f"{'#' * level} `{key}`", "", *_model_md(inner, key + ".", flags, level + 1)]
    return lines


def _inner_model(annotation: object) -> type[BaseModel] | None:
    """The model a field holds, alone or in a tuple or list of them."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type_name(t: object) -> str:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return " | ".join(json.dumps(m.value) for m in t)
    return "None" if t is type(None) else getattr(t, "__name__", str(t))


def _bounds(field: FieldInfo) -> str:
    found = [
        f"{sign} {getattr(m, name)}"
        for m in field.metadata
        for name, sign in BOUNDS
        if hasattr(m, name)
    ]
    return f" ({', '.join(found)})" if found else ""


def _default(field: FieldInfo, inner: type[BaseModel] | None) -> str:
    if field.is_required():
        return "required"
    if inner is field.annotation:
        return "its section's defaults"
    if field.default is PydanticUndefined and not isinstance(field.default_factory, type):
        return "computed"  # e.g. serve.api_key: read from the environment, never shown here
    value = field.get_default(call_default_factory=True)
    dumped = TypeAdapter(field.annotation).dump_python(value, mode="json", exclude_defaults=True)
    return f"`{json.dumps(dumped)}`"


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell: one line, no raw HTML, no column breaks, and a `*`
    (`DIR/<class>/*.jpg`) shown as itself rather than starting emphasis."""
    text = html.escape(" ".join(text.split()), quote=False)
    return text.replace("|", "\\|").replace("*", "\\*")


GENERATED: dict[str, Callable[[], str]] = {"cli": cli_reference, "config": config_reference}
