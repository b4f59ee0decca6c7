"""What the results tables and plots show: the ``results`` section of the experiment config.

Every field has a default, so a config without a ``results`` section (or a results folder
rebuilt with ``streamkd report`` and no config at all) gets the standard ``wer`` table and
the three plots. The workflow validates the section against the JSON schema first; the
checks here repeat the essentials so that the library, called from Python, is just as strict.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from streamkd.dynamic_chunk import DYNAMIC
from streamkd.schema import config_default

MAIN_TABLE = "wer"
TABLE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
BASELINE_METHOD = config_default("results.baseline")
TEACHER_METHOD = "teacher"
CHUNK_TRAINING = ("fixed", DYNAMIC)  # a table's students: one chunk size each, or sampled per batch
# The figures every results folder gets (streamkd.results.plots), written as PNG and PDF.
PLOTS = ("wer_vs_chunk", "wer_vs_apc_shift", "loss_curves", "wer_vs_delay")


class ResultsConfigError(ValueError):
    """A results option is unknown or has an impossible value."""


def _check_keys(section: str, given: Mapping[str, Any], cls) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ResultsConfigError(
            f"{section}: unknown option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )


def _optional_list(section: str, name: str, value: Any, kind: type) -> Optional[Tuple[Any, ...]]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise ResultsConfigError(f"{section}.{name}: expected a non-empty list or null, got {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, kind):
            raise ResultsConfigError(f"{section}.{name}: {item!r} is not of type {kind.__name__}")
    if len(set(value)) != len(value):
        raise ResultsConfigError(f"{section}.{name}: repeated entries in {list(value)!r}")
    return tuple(value)


def _check_baseline(section: str, value: Any) -> Optional[str]:
    if value == TEACHER_METHOD:
        raise ResultsConfigError(f"{section}.baseline: the baseline is a streaming student method, not the teacher")
    return value


@dataclass(frozen=True)
class TableSpec:
    """Which rows and columns one table shows; ``None`` means everything the records hold.

    Rows are systems (a KD method with its layers, APC shift, ...), in the order of
    ``methods``; the teacher is a reference row when ``"teacher"`` is among them (the
    default). Columns are chunk size x test set, each with the WER and, optionally, the
    relative WER reduction against the baseline at the same chunk size. ``baseline`` replaces
    ``results.baseline`` in one table, e.g. to test aux KD against layer KD;
    ``baseline_apc_shift`` picks one shift of a shifted baseline method, e.g. to test aux
    KD's APC shifts against shift 0.
    ``kd_layers`` and ``apc_shifts`` filter only the runs that have such a field: the
    teacher and the ``none`` and ``token`` students stay in the table. ``chunk_training``
    keeps only the ``fixed``- or only the ``dynamic``-chunk students (the teacher stays), so
    that a table of dynamic students is tested against the dynamic baseline.
    """

    caption: Optional[str] = None
    methods: Optional[Tuple[str, ...]] = None
    chunk_sizes: Optional[Tuple[int, ...]] = None
    test_sets: Optional[Tuple[str, ...]] = None
    decoding_method: Optional[str] = None  # default: ResultsConfig.decoding_method
    teacher_decoding_method: Optional[str] = None  # default: the table's decoding method
    kd_layers: Optional[Tuple[str, ...]] = None
    apc_shifts: Optional[Tuple[int, ...]] = None
    baseline: Optional[str] = None  # default: ResultsConfig.baseline
    baseline_apc_shift: Optional[int] = None  # the baseline's shift where its method has several
    chunk_training: Optional[str] = None  # "fixed" or "dynamic": only such students (and the teacher)
    std: bool = config_default("definitions.results_table.std")
    relative_reduction: bool = config_default("definitions.results_table.relative_reduction")
    significance: bool = config_default("definitions.results_table.significance")
    params: bool = config_default("definitions.results_table.params")
    gap_recovered: bool = config_default("definitions.results_table.gap_recovered")
    delay: bool = config_default(
        "definitions.results_table.delay"
    )  # emission-delay columns, when the records have them

    @classmethod
    def from_dict(cls, options: Optional[Mapping[str, Any]], section: str = "results.tables.?") -> "TableSpec":
        options = dict(options or {})
        _check_keys(section, options, cls)
        for name in ("std", "relative_reduction", "gap_recovered", "significance", "params", "delay"):
            if name in options and not isinstance(options[name], bool):
                raise ResultsConfigError(f"{section}.{name}: expected true or false, got {options[name]!r}")
        for name in ("caption", "decoding_method", "teacher_decoding_method", "baseline"):
            if options.get(name) is not None and not isinstance(options[name], str):
                raise ResultsConfigError(f"{section}.{name}: expected a string, got {options[name]!r}")
        shift = options.get("baseline_apc_shift")
        if shift is not None and (isinstance(shift, bool) or not isinstance(shift, int) or shift < 0):
            raise ResultsConfigError(
                f"{section}.baseline_apc_shift: expected a shift of 0 or more frames, got {shift!r}"
            )
        chunk_training = options.get("chunk_training")
        if chunk_training is not None and chunk_training not in CHUNK_TRAINING:
            raise ResultsConfigError(
                f"{section}.chunk_training: expected one of {', '.join(CHUNK_TRAINING)}, got {chunk_training!r}"
            )
        kd_layers = options.get("kd_layers")
        if kd_layers is not None:
            kd_layers = [normalise_layers(v) for v in kd_layers] if isinstance(kd_layers, (list, tuple)) else kd_layers
        chunk_sizes = _optional_list(section, "chunk_sizes", options.get("chunk_sizes"), int)
        if chunk_sizes and min(chunk_sizes) < 1:
            raise ResultsConfigError(
                f"{section}.chunk_sizes: chunk sizes are at least 1 frame, got {list(chunk_sizes)}"
            )
        return cls(
            caption=options.get("caption"),
            methods=_optional_list(section, "methods", options.get("methods"), str),
            chunk_sizes=chunk_sizes,
            test_sets=_optional_list(section, "test_sets", options.get("test_sets"), str),
            decoding_method=options.get("decoding_method"),
            teacher_decoding_method=options.get("teacher_decoding_method"),
            kd_layers=_optional_list(section, "kd_layers", kd_layers, str),
            apc_shifts=_optional_list(section, "apc_shifts", options.get("apc_shifts"), int),
            baseline=_check_baseline(section, options.get("baseline")),
            baseline_apc_shift=shift,
            chunk_training=chunk_training,
            std=options.get("std", cls.std),
            relative_reduction=options.get("relative_reduction", cls.relative_reduction),
            significance=options.get("significance", cls.significance),
            params=options.get("params", cls.params),
            gap_recovered=options.get("gap_recovered", cls.gap_recovered),
            delay=options.get("delay", cls.delay),
        )


@dataclass(frozen=True)
class SignificanceConfig:
    """Paired bootstrap over test utterances (see :mod:`streamkd.results.significance`)."""

    confidence: float = config_default("results.significance.confidence")
    num_resamples: int = config_default("results.significance.num_resamples")
    seed: int = config_default("results.significance.seed")

    @classmethod
    def from_dict(
        cls, options: Optional[Mapping[str, Any]], section: str = "results.significance"
    ) -> "SignificanceConfig":
        options = dict(options or {})
        _check_keys(section, options, cls)
        out = cls(**options)
        if not isinstance(out.confidence, (int, float)) or not 0 < out.confidence < 1:
            raise ResultsConfigError(
                f"{section}.confidence: expected a number strictly between 0 and 1, got {out.confidence!r}"
            )
        if isinstance(out.num_resamples, bool) or not isinstance(out.num_resamples, int) or out.num_resamples < 100:
            raise ResultsConfigError(f"{section}.num_resamples: expected an integer >= 100, got {out.num_resamples!r}")
        if isinstance(out.seed, bool) or not isinstance(out.seed, int):
            raise ResultsConfigError(f"{section}.seed: expected an integer, got {out.seed!r}")
        return out


@dataclass(frozen=True)
class PlotConfig:
    """What the plots show. Each plot has one panel per test set."""

    methods: Optional[Tuple[str, ...]] = None
    test_sets: Optional[Tuple[str, ...]] = None
    decoding_method: Optional[str] = None  # default: ResultsConfig.decoding_method
    dpi: int = config_default("results.plots.dpi")

    @classmethod
    def from_dict(cls, options: Optional[Mapping[str, Any]], section: str = "results.plots") -> "PlotConfig":
        options = dict(options or {})
        _check_keys(section, options, cls)
        dpi = options.get("dpi", cls.dpi)
        if isinstance(dpi, bool) or not isinstance(dpi, int) or not 50 <= dpi <= 600:
            raise ResultsConfigError(f"{section}.dpi: expected an integer between 50 and 600, got {dpi!r}")
        if options.get("decoding_method") is not None and not isinstance(options["decoding_method"], str):
            raise ResultsConfigError(f"{section}.decoding_method: expected a string")
        return cls(
            methods=_optional_list(section, "methods", options.get("methods"), str),
            test_sets=_optional_list(section, "test_sets", options.get("test_sets"), str),
            decoding_method=options.get("decoding_method"),
            dpi=dpi,
        )


@dataclass(frozen=True)
class ResultsConfig:
    decoding_method: str = config_default("results.decoding_method")
    baseline: str = BASELINE_METHOD
    precision: int = config_default("results.precision")
    tables: Dict[str, TableSpec] = field(default_factory=lambda: {MAIN_TABLE: TableSpec()})
    significance: SignificanceConfig = field(default_factory=SignificanceConfig)
    plots: PlotConfig = field(default_factory=PlotConfig)

    @classmethod
    def from_dict(cls, options: Optional[Mapping[str, Any]]) -> "ResultsConfig":
        options = dict(options or {})
        _check_keys("results", options, cls)
        decoding_method = options.get("decoding_method", cls.decoding_method)
        baseline = options.get("baseline", cls.baseline)
        precision = options.get("precision", cls.precision)
        for name, value in (("decoding_method", decoding_method), ("baseline", baseline)):
            if not isinstance(value, str) or not value:
                raise ResultsConfigError(f"results.{name}: expected a non-empty string, got {value!r}")
        _check_baseline("results", baseline)
        if isinstance(precision, bool) or not isinstance(precision, int) or not 0 <= precision <= 4:
            raise ResultsConfigError(f"results.precision: expected an integer from 0 to 4, got {precision!r}")
        raw_tables = options.get("tables") or {}
        if not isinstance(raw_tables, Mapping):
            raise ResultsConfigError("results.tables: expected a mapping from table name to options")
        tables: Dict[str, TableSpec] = {}
        # The main table always exists: the workflow prints it and the README points at it.
        for name in [MAIN_TABLE] + [n for n in raw_tables if n != MAIN_TABLE]:
            if not TABLE_NAME.match(str(name)):
                raise ResultsConfigError(
                    f"results.tables: table name {name!r} may use only letters, digits, '_' and '-'"
                )
            tables[name] = TableSpec.from_dict(raw_tables.get(name), f"results.tables.{name}")
        return cls(
            decoding_method=decoding_method,
            baseline=baseline,
            precision=precision,
            tables=tables,
            significance=SignificanceConfig.from_dict(options.get("significance")),
            plots=PlotConfig.from_dict(options.get("plots")),
        )

    def to_dict(self) -> Dict[str, Any]:
        def plain(value):
            if isinstance(value, tuple):
                return list(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return plain(asdict(self))

    def table_baseline(self, spec: TableSpec) -> str:
        """The method a table's relative reductions and significance tests compare against."""
        return spec.baseline or self.baseline

    def table_decoding(self, spec: TableSpec) -> Tuple[str, str]:
        """The decoding method of the students' and of the teacher's rows of a table."""
        students = spec.decoding_method or self.decoding_method
        return students, spec.teacher_decoding_method or students


def normalise_layers(value: Any) -> Optional[str]:
    """Layer lists are stored as ``"3,6"``; records may hold a list or a string."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ",".join(str(int(v)) for v in value)
    if isinstance(value, bool):
        raise ValueError(f"not a layer list: {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
        return ",".join(parts) if parts else None
    raise ValueError(f"not a layer list: {value!r}")
