"""The distillation grid: one student run per cell, named from the cell's values.

Cells (for every chunk size C and seed S):

- ``none``, ``token``: once per chunk size and seed (``none-chunk4-seed1``);
- ``layer``: per KD layer set (``layer-chunk4-layers3_6-seed1``), and per APC shift when
  ``grid.shifted_methods`` lists it (``layer-chunk4-layers3_6-shift2-seed1``);
- ``aux``: per layer set and APC shift (``aux-chunk4-layers3_6-shift2-seed1``).

An explicit teacher mapping adds ``-teacher2_6`` after the student layers. Names use only
letters, digits, ``-`` and ``_``, so they are safe in paths, shells and Snakemake
wildcards, and every value of the cell can be read back from the run directory's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from streamkd.distill.config import LAYER_METHODS
from streamkd.schema import fill_defaults


def _filled(grid: Mapping[str, Any]) -> Dict[str, Any]:
    """``grid`` with the schema's defaults for the keys it leaves out."""
    return dict(fill_defaults({"grid": dict(grid)})["grid"])


@dataclass(frozen=True)
class GridCell:
    method: str
    chunk_size: int
    seed: int
    student_layers: Tuple[int, ...] = ()
    teacher_layers: Optional[Tuple[int, ...]] = None  # None: proportional mapping
    apc_shift: Optional[int] = None

    @property
    def run_name(self) -> str:
        parts = [self.method, f"chunk{self.chunk_size}"]
        if self.student_layers:
            parts.append("layers" + "_".join(map(str, self.student_layers)))
        if self.teacher_layers is not None:
            parts.append("teacher" + "_".join(map(str, self.teacher_layers)))
        if self.apc_shift is not None:
            parts.append(f"shift{self.apc_shift}")
        parts.append(f"seed{self.seed}")
        return "-".join(parts)

    def train_args(self) -> List[str]:
        """The cell's own ``streamkd train`` options (KD settings shared by all cells come separately)."""
        args = ["--method", self.method, "--chunk-size", str(self.chunk_size), "--seed", str(self.seed)]
        if self.student_layers:
            args += ["--kd-layers", ",".join(map(str, self.student_layers))]
        if self.teacher_layers is not None:
            args += ["--kd-teacher-layers", ",".join(map(str, self.teacher_layers))]
        if self.apc_shift is not None:
            args += ["--apc-shift", str(self.apc_shift)]
        return args


def layer_sets(grid: Mapping[str, Any]) -> List[Tuple[Tuple[int, ...], Optional[Tuple[int, ...]]]]:
    """``grid.kd_layers`` entries as (student layers, teacher layers or None)."""
    sets = []
    for entry in _filled(grid)["kd_layers"]:
        if isinstance(entry, Mapping):
            sets.append((tuple(entry["student"]), tuple(entry["teacher"])))
        else:
            sets.append((tuple(entry), None))
    return sets


def expand_grid(grid: Mapping[str, Any]) -> List[GridCell]:
    """Every student cell of ``grid`` (the config's grid section), in a stable order."""
    grid = _filled(grid)
    methods: Sequence[str] = grid["methods"]
    shifted = set(grid["shifted_methods"])
    shifts: Sequence[int] = grid["apc_shifts"]
    cells: List[GridCell] = []
    for chunk in grid["chunk_sizes"]:
        for method in methods:
            if method not in LAYER_METHODS:
                variants: List[Dict[str, Any]] = [{}]
            else:
                method_shifts = shifts if method in shifted else [None]
                variants = [
                    {"student_layers": student, "teacher_layers": teacher, "apc_shift": shift}
                    for student, teacher in layer_sets(grid)
                    for shift in method_shifts
                ]
            for variant in variants:
                for seed in grid["seeds"]:
                    cells.append(GridCell(method=method, chunk_size=chunk, seed=seed, **variant))
    return cells
