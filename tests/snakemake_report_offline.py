"""Run ``snakemake --report`` without network access (for the end-to-end test).

Snakemake 7 downloads the report's JavaScript, CSS and licence texts while it builds the
page. Tests run offline, so here those downloads return a placeholder comment; everything
the workflow contributes (our tables, figures, captions, categories) is built for real.
Usage: python tests/snakemake_report_offline.py <snakemake arguments> --report report.html
"""

import sys

import snakemake
import snakemake.report
import snakemake.report.data.packages as packages
from snakemake.report.data import common

_fetch = common.get_resource_as_string


def _offline(path_or_uri):
    if common.is_local_file(path_or_uri):
        return _fetch(path_or_uri)
    return f"/* {path_or_uri}: not downloaded (offline test) */"


snakemake.report.get_resource_as_string = packages.get_resource_as_string = _offline

if __name__ == "__main__":
    sys.exit(snakemake.main())
