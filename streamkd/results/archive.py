"""Copy an experiment's run records, and the small files they name, into a folder to keep.

A record names its per-utterance errors and its training summary relative to its own folder,
so copying each run's ``record.json`` together with exactly those files (never checkpoints
or features) gives a folder that ``streamkd report`` reads like the experiment itself, and
that is small enough to commit as reference results.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List

from streamkd.results.load import find_records
from streamkd.results.record import resolve_record_path


def files_of_record(record_path: Path) -> List[Path]:
    """The record and the relative files it names (errors and emissions per test set and method, training summary)."""
    record = json.loads(Path(record_path).read_text())
    named = [
        name
        for kind in ("errors", "emissions")
        for per_test in (record.get(kind) or {}).values()
        for name in per_test.values()
    ]
    if record.get("train_summary"):
        named.append(record["train_summary"])
    relative = [n for n in named if not Path(n).is_absolute()]
    return [Path(record_path)] + [resolve_record_path(record_path, n) for n in relative]


def archive_records(exp_dir: Path, out_dir: Path) -> List[Path]:
    """Copy every record under ``exp_dir`` with its files to ``out_dir/<run folder>/``; returns the copied records."""
    exp_dir, out_dir = Path(exp_dir), Path(out_dir)
    copied = []
    for record_path in find_records(exp_dir):
        run_dir = record_path.parent
        for source in files_of_record(record_path):
            if not source.is_file():
                raise FileNotFoundError(f"{record_path} names {source}, which does not exist")
            target = out_dir / run_dir.relative_to(exp_dir) / source.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        copied.append(out_dir / run_dir.relative_to(exp_dir) / "record.json")
    return copied
