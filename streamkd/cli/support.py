"""How the command line reports failures and checks its JSON options.

A failing command prints one line, ``error: ...``, naming the file, field or value, and exits
with a non-zero status. The Python traceback is for developers: ``streamkd --debug ...`` or
``STREAMKD_DEBUG=1`` shows it. JSON options are checked against the same schema as the
experiment config, so a missing or unknown key is named the same way in both places.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict

import click
import jsonschema

log = logging.getLogger("streamkd")

DEBUG_ENV = "STREAMKD_DEBUG"

# JSON option -> where its schema lives in workflow/schemas/config.schema.yaml.
OPTION_SCHEMAS = {
    "--encoder": ("definitions", "encoder"),
    "--teacher-encoder": ("definitions", "encoder"),
    "--optimisation": ("definitions", "optimisation"),
    "--head": ("definitions", "head"),
    "--kd": ("properties", "kd"),
}
# --corpus-config and --results-config are checked by CorpusConfig and ResultsConfig, which
# take partial sections (every key has a default there).


def debug_requested(ctx: click.Context) -> bool:
    flag = ctx.find_root().params.get("debug", False)
    return bool(flag) or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(error: BaseException) -> str:
    """The error's message on one line; the exception type where the message alone is unclear."""
    if isinstance(error, click.ClickException):
        text = error.format_message()
    elif isinstance(error, (ValueError, OSError, RuntimeError)):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


class ErrorReportingGroup(click.Group):
    """A click group whose commands fail with ``error: ...`` instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as error:  # every failure of a command, reported uniformly
            if debug_requested(ctx):
                raise
            exit_code = error.exit_code if isinstance(error, click.ClickException) else 1
            click.echo(f"error: {one_line(error)}", err=True)
            ctx.exit(exit_code)


def _option_schema(option: str) -> Dict[str, Any]:
    from streamkd.config import load_schema

    schema = load_schema()
    section, name = OPTION_SCHEMAS[option]
    return {**schema[section][name], "definitions": schema["definitions"]}


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path)


def schema_problems(value: Dict[str, Any], option: str) -> list:
    """Every way ``value`` breaks the config schema of ``option``, each naming its key."""
    validator = jsonschema.Draft7Validator(_option_schema(option))
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"{_where(e)}: {e.message}" if _where(e) else e.message for e in errors]


def json_option(value: str, option: str) -> Dict[str, Any]:
    """Parse a JSON-object option and check it against the config schema (when it has one)."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not valid JSON: {e}", param_hint=option) from e
    if not isinstance(parsed, dict):
        raise click.BadParameter("expected a JSON object", param_hint=option)
    if option in OPTION_SCHEMAS:
        problems = schema_problems(parsed, option)
        if problems:
            raise click.BadParameter("; ".join(problems), param_hint=option)
    return parsed
