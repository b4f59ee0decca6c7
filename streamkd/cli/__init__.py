"""Command-line interface: one thin command per pipeline stage, each calling a library function.

Every Snakemake rule calls one of these commands, so every step of the workflow can also be
run, debugged or scripted by hand.

One module per area: data, training, decoding, results and deploy; common.py holds the
command group and what the areas share.
"""

from streamkd.cli import data, decoding, deploy, results, training  # noqa: F401 (each registers its commands)
from streamkd.cli.common import main

__all__ = ["main"]
