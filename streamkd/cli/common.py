"""The command group and what several areas' commands share: path types, option parsers, the merged config."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import List, Optional, Tuple

import click

from streamkd.cli.support import DEBUG_ENV, ErrorReportingGroup
from streamkd.data.corpora import CORPORA
from streamkd.schema import config_default
from streamkd.utils import setup_logging

log = logging.getLogger("streamkd")

PathType = click.Path(path_type=Path)
ExistingPath = click.Path(exists=True, path_type=Path)
LIBRISPEECH_CORPORA = [name for name, spec in CORPORA.items() if spec.download_parts]


@click.group(cls=ErrorReportingGroup)
@click.option("--log-file", type=PathType, default=None, help="Also append log lines to this file.")
@click.option("--debug", is_flag=True, help=f"Show the Python traceback of a failure (also: {DEBUG_ENV}=1).")
def main(log_file: Optional[Path], debug: bool) -> None:
    """streamkd: distil full-context ASR encoders into streaming ones."""
    setup_logging(log_file)


def layer_list(value: Optional[str], name: str) -> Optional[List[int]]:
    """Parse a comma-separated list of layer numbers: '3,6' -> [3, 6]."""
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated layer numbers such as 3,6, got {value!r}", param_hint=name
        ) from None


# The beam settings of every search: option name, its config key under decoding, help.
SEARCH_OPTIONS = (
    ("--search-beam", "search_beam", "CTC graph search beam."),
    ("--output-beam", "output_beam", "CTC lattice beam."),
    ("--beam", "beam", "Hypotheses kept by modified beam search."),
    ("--fast-beam", "fast_beam", "Score beam of fast_beam_search."),
    ("--max-states", "max_states", "fast_beam_search states per frame."),
    ("--max-contexts", "max_contexts", "fast_beam_search contexts per frame."),
    ("--max-symbols-per-frame", "max_symbols_per_frame", "Greedy search."),
)


def search_options(func):
    """Adds the search options (defaults from the config schema), passed on as one ``search`` dict."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        kwargs["search"] = {key: kwargs.pop(key) for _, key, _ in SEARCH_OPTIONS}
        return func(*args, **kwargs)

    for flag, key, help_text in reversed(SEARCH_OPTIONS):
        option = click.option(flag, key, default=config_default(f"decoding.{key}"), show_default=True, help=help_text)
        wrapper = option(wrapper)
    return wrapper


def merged_config(config_files: Tuple[Path, ...]) -> dict:
    """The repository's config.yaml with each file merged over it, as Snakemake's --configfile does."""
    import yaml
    from snakemake.utils import update_config

    from streamkd.config import validate_config

    # The workflow's default config: in the folder Snakemake runs in, or beside the package in a checkout.
    candidates = [Path.cwd() / "config.yaml", Path(__file__).resolve().parents[2] / "config.yaml"]
    base = next((c for c in candidates if c.is_file()), None)
    if base is None:
        raise click.UsageError(
            f"--config is merged over config.yaml, found in neither {' nor '.join(map(str, candidates))}"
        )
    config = yaml.safe_load(base.read_text())
    for path in config_files:
        update_config(config, yaml.safe_load(path.read_text()) or {})
    validate_config(config, source=" + ".join(map(str, config_files)))
    return config
