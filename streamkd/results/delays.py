"""Emission delays of committed runs against another reference, without decoding again.

Each record names the per-utterance emission records its delays were computed from
(``record["emissions"]``); :func:`recompute_delays` recomputes every delay of a record
from them against new reference word times (see :mod:`streamkd.decode.word_delay`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping, Optional

from streamkd.decode.word_delay import ReferenceWords, read_emissions, summarise_delays
from streamkd.results.record import DELAY_FIELDS, resolve_record_path


def recompute_delays(path: Path, record: dict, references: Mapping[str, Optional[ReferenceWords]]) -> dict:
    """A copy of ``record`` whose delays are computed from its emission records against ``references``."""
    out = copy.deepcopy(record)
    stored = record.get("emissions") or {}
    for test_set, by_method in (record.get("delay") or {}).items():
        for method, old in by_method.items():
            name = (stored.get(test_set) or {}).get(method)
            if name is None:
                raise ValueError(
                    f"{path}: no emission records for {test_set}/{method}, so its delay cannot be recomputed"
                )
            emissions = resolve_record_path(path, name)
            summary = summarise_delays(read_emissions(emissions), references, where=str(emissions)).to_dict()
            out["delay"][test_set][method] = {
                **{k: summary[k] for k in DELAY_FIELDS if k in summary},
                "mode": old.get("mode"),
            }
    return out


__all__ = ["recompute_delays"]
