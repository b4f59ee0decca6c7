"""The distillation grid: one student run per cell, named from the cell's values.

Cells (for every chunk size C and seed S):

- ``none``, ``token``: once per chunk size and seed (``none-chunk4-seed1``);
- ``layer``: per KD layer set (``layer-chunk4-layers3_6-seed1``), and per APC shift when
  ``grid.shifted_methods`` lists it (``layer-chunk4-layers3_6-shift2-seed1``);
- ``aux``: per layer set and APC shift (``aux-chunk4-layers3_6-shift2-seed1``).

A ``dynamic`` entry of ``grid.chunk_sizes`` adds dynamic-chunk students, which sample their
chunk size per batch from ``grid.dynamic_chunk`` and are named ``chunkdynamic``
(``aux-chunkdynamic-layers3_6-shift2-seed1``); each is decoded at every chunk size of
:func:`decode_chunk_sizes`.

An explicit teacher mapping adds ``-teacher2_6`` after the student layers, and a KD weight from
``grid.kd_weights`` adds ``-kdw0_3`` (weight 0.3) before the seed. Names use only
letters, digits, ``-`` and ``_``, so they are safe in paths, shells and Snakemake
wildcards, and every value of the cell can be read back from the run directory's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from streamkd.distill.config import LAYER_METHODS
from streamkd.dynamic_chunk import DYNAMIC
from streamkd.schema import fill_defaults


def _filled(grid: Mapping[str, Any]) -> Dict[str, Any]:
    """``grid`` with the schema's defaults for the keys it leaves out."""
    return dict(fill_defaults({"grid": dict(grid)})["grid"])


@dataclass(frozen=True)
class GridCell:
    method: str
    chunk_size: Union[int, str]  # encoder frames, or "dynamic"
    seed: int
    student_layers: Tuple[int, ...] = ()
    teacher_layers: Optional[Tuple[int, ...]] = None  # None: proportional mapping
    apc_shift: Optional[int] = None
    kd_weight: Optional[float] = None  # from grid.kd_weights; None: kd.weight applies

    @property
    def dynamic(self) -> bool:
        """A dynamic-chunk student: its chunk size is sampled per batch from grid.dynamic_chunk."""
        return self.chunk_size == DYNAMIC

    @property
    def run_name(self) -> str:
        parts = [self.method, f"chunk{self.chunk_size}"]
        if self.student_layers:
            parts.append("layers" + "_".join(map(str, self.student_layers)))
        if self.teacher_layers is not None:
            parts.append("teacher" + "_".join(map(str, self.teacher_layers)))
        if self.apc_shift is not None:
            parts.append(f"shift{self.apc_shift}")
        if self.kd_weight is not None:
            parts.append("kdw" + f"{self.kd_weight:g}".replace(".", "_"))
        parts.append(f"seed{self.seed}")
        return "-".join(parts)

    def train_args(self) -> List[str]:
        """The cell's own ``streamkd train`` options (KD settings shared by all cells come separately;
        so does a dynamic cell's ``--dynamic-chunk``)."""
        args = ["--method", self.method]
        if not self.dynamic:
            args += ["--chunk-size", str(self.chunk_size)]
        args += ["--seed", str(self.seed)]
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
    weights: Sequence[Optional[float]] = grid.get("kd_weights") or [None]
    for chunk in grid["chunk_sizes"]:
        for method in methods:
            if method == "none":
                variants: List[Dict[str, Any]] = [{}]
            elif method not in LAYER_METHODS:
                variants = [{"kd_weight": w} for w in weights]
            else:
                method_shifts = shifts if method in shifted else [None]
                variants = [
                    {"student_layers": student, "teacher_layers": teacher, "apc_shift": shift, "kd_weight": w}
                    for student, teacher in layer_sets(grid)
                    for shift in method_shifts
                    for w in weights
                ]
            for variant in variants:
                for seed in grid["seeds"]:
                    cells.append(GridCell(method=method, chunk_size=chunk, seed=seed, **variant))
    return cells


def fixed_chunk_sizes(grid: Mapping[str, Any]) -> List[int]:
    """The integer chunk sizes of ``grid.chunk_sizes`` (``dynamic`` left out)."""
    return [c for c in grid["chunk_sizes"] if c != DYNAMIC]


def decode_chunk_sizes(config: Mapping[str, Any]) -> List[int]:
    """The chunk sizes a dynamic-chunk student is decoded at, one table column each:
    ``decoding.chunk_sizes``, else the grid's integer chunk sizes."""
    return list(config["decoding"].get("chunk_sizes") or fixed_chunk_sizes(config["grid"]))


def representative_chunk_size(grid: Mapping[str, Any]) -> int:
    """One chunk size for what times a single student (benchmarks): the grid's first integer
    size, else the largest size a dynamic-chunk student samples."""
    fixed = fixed_chunk_sizes(grid)
    return fixed[0] if fixed else max(grid["dynamic_chunk"]["chunk_sizes"])


def kd_weight(cell: GridCell, kd: Mapping[str, Any]) -> float:
    """The KD weight of a cell: its grid weight, else kd.weight (one number, or one per method)."""
    if cell.kd_weight is not None:
        return cell.kd_weight
    weight = kd.get("weight", 1.0)
    if isinstance(weight, Mapping):
        if cell.method not in weight:
            raise ValueError(f"kd.weight has no entry for method {cell.method!r} (it lists {', '.join(weight)})")
        return weight[cell.method]
    return weight


def teacher_cache_name(cell: GridCell, config: Mapping[str, Any]) -> Optional[str]:
    """The teacher cache a KD cell reads (its folder under ``exp/teacher/targets/``), or None
    when it reads none (``none`` cells, ``kd.teacher_targets: live``).

    Layer and aux cells read their mapped teacher layers (``layers2_4``); token cells the CTC
    posteriors (``posteriors``), or the last layer when the head has a transducer (its joiner
    runs on it). One cache per name, built once: the cells of any grid config read the same
    files, so running another config over the same experiment never rebuilds a cache that
    trained students depend on.
    """
    from streamkd.distill.mapping import layer_pairs

    if cell.method == "none" or config["kd"].get("teacher_targets", "live") != "cache":
        return None
    num_teacher = config["model"]["teacher"]["num_layers"]
    if cell.method == "token":
        transducer = "transducer" in config["model"].get("head", {}).get("type", "ctc")
        return f"layers{num_teacher}" if transducer else "posteriors"
    num_student = config["model"]["student"]["num_layers"]
    pairs = layer_pairs(cell.student_layers, num_student, num_teacher, cell.teacher_layers)
    return "layers" + "_".join(str(t) for t in sorted({t for _, t in pairs}))


def parse_teacher_cache_name(name: str) -> Tuple[List[int], bool]:
    """``layers2_4`` -> ([2, 4], False); ``posteriors`` -> ([], True)."""
    if name == "posteriors":
        return [], True
    if not name.startswith("layers"):
        raise ValueError(f"not a teacher cache name: {name!r} (expected layersN_M or posteriors)")
    return [int(layer) for layer in name[len("layers") :].split("_")], False
