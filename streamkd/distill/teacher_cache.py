"""The teacher-target cache: the frozen teacher's KD targets, computed once per teacher.

With a clean teacher input (``kd.teacher_input: clean``) and no randomness before the
teacher, its layer outputs and posteriors for a cut are the same in every epoch and in every
cell of the grid. ``build_teacher_cache`` runs the teacher once over the training cuts and
stores what the grid's KD students need, the way lhotse stores features: one lilcom archive
(``targets.lca``) and a copy of the cut manifest in which every cut carries its targets as
custom :class:`~lhotse.array.TemporalArray` fields (``teacher_layer2``, ...,
``teacher_log_probs``; 40 ms frames along dim 0). Training on that manifest delivers the
targets with each batch (:func:`collate_teacher_targets`), so KD steps never run the teacher.

Precision: lilcom stores multiples of ``2**TICK_POWER``; every stored value is within
``MAX_ABS_ERROR = 2**(TICK_POWER - 1)`` (about 4.9e-4) of the teacher's float32 output.

``summary.json`` beside the manifest names the teacher (checkpoint digest and config hash),
the training cuts (digests of their manifest and feature archives), the stored fields and
the size; :func:`open_teacher_cache` refuses a cache made by another teacher or from other
training cuts or features, one that lacks a field the student needs, or one that misses a
training cut.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from lhotse import CutSet, LilcomChunkyWriter
from lhotse.array import TemporalArray
from torch import Tensor

from streamkd.data.cached_targets import TeacherCacheError
from streamkd.data.loaders import eval_dataloader, load_cuts, unpack_batch
from streamkd.distill.teacher import FrozenTeacher
from streamkd.model.checkpoint import model_digest
from streamkd.model.subsampling import INPUT_FRAME_SHIFT_MS, SUBSAMPLING_FACTOR
from streamkd.provenance import cached_file_digest, features_digest
from streamkd.utils import atomic_path, format_seconds, write_json

log = logging.getLogger(__name__)

CACHE_FORMAT = "streamkd-teacher-targets-v1"
TICK_POWER = -10
MAX_ABS_ERROR = 2.0 ** (TICK_POWER - 1)
POSTERIOR_FIELD = "teacher_log_probs"
ENCODER_FRAME_SHIFT = SUBSAMPLING_FACTOR * INPUT_FRAME_SHIFT_MS / 1000


def layer_field(layer: int) -> str:
    """Custom-field name of teacher block ``layer`` (1-based)."""
    return f"teacher_layer{layer}"


@dataclass(frozen=True)
class TargetSpec:
    """What a cache holds: teacher blocks (1-based) and, optionally, the CTC log-posteriors."""

    layers: Tuple[int, ...] = ()
    posteriors: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(sorted(set(int(layer) for layer in self.layers))))
        if any(layer < 1 for layer in self.layers):
            raise ValueError(f"teacher layers are 1-based, got {list(self.layers)}")
        if not self.layers and not self.posteriors:
            raise ValueError("a teacher cache needs at least one layer or the posteriors")

    @property
    def fields(self) -> List[str]:
        return [layer_field(layer) for layer in self.layers] + ([POSTERIOR_FIELD] if self.posteriors else [])

    def covers(self, other: "TargetSpec") -> bool:
        return set(other.layers) <= set(self.layers) and (self.posteriors or not other.posteriors)


def teacher_targets(teacher: FrozenTeacher, feats: Tensor, feat_lens: Tensor, spec: TargetSpec):
    """The teacher's outputs named by ``spec``: ``({field: (B, T', D)}, lengths)``."""
    for layer in spec.layers:
        if layer > teacher.num_layers:
            raise TeacherCacheError(
                f"teacher layer {layer} is requested but the teacher has {teacher.num_layers} layers"
            )
    log_probs, lengths, hidden = teacher(feats, feat_lens)
    out = {layer_field(layer): hidden[layer - 1] for layer in spec.layers}
    if spec.posteriors:
        if log_probs is None:
            raise TeacherCacheError("the cache should hold CTC posteriors but the teacher has no CTC head")
        out[POSTERIOR_FIELD] = log_probs
    return out, lengths


def _store_cut(writer: LilcomChunkyWriter, cut, targets: Dict[str, Tensor], index: int, length: int):
    for field, batch_values in targets.items():
        # lilcom quantises its input in place: hand it a copy.
        values = batch_values[index, :length].float().cpu().numpy().copy()
        array = writer.store_array(
            f"{cut.id}/{field}", values, frame_shift=ENCODER_FRAME_SHIFT, temporal_dim=0, start=cut.start
        )
        cut = cut.with_custom(field, array)
    return cut


def build_teacher_cache(
    teacher: FrozenTeacher,
    teacher_path: Path,
    cuts_path: Path,
    out_cuts: Path,
    spec: TargetSpec,
    max_duration: float = 60.0,
) -> dict:
    """Run the teacher over ``cuts_path`` once and write the cache beside ``out_cuts``.

    Writes ``targets.lca`` (lilcom archive), ``out_cuts`` (the cuts with their targets) and
    ``summary.json``; returns the summary. The archive and manifest are written under
    temporary names and moved into place, so an interrupted build leaves no cache behind.
    """
    out_cuts = Path(out_cuts)
    out_dir = out_cuts.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    cuts = load_cuts(cuts_path).to_eager()
    by_id = {cut.id: cut for cut in cuts}
    storage = out_dir / "targets.lca"
    start = last_log = time.time()
    stored, done_seconds = [], 0.0
    total_seconds = sum(c.duration for c in cuts)
    with atomic_path(storage) as tmp_storage:
        with LilcomChunkyWriter(tmp_storage, tick_power=TICK_POWER) as writer:
            for raw in eval_dataloader(cuts, max_duration):
                batch = unpack_batch(raw)
                targets, lengths = teacher_targets(teacher, batch.feats, batch.feat_lens, spec)
                for i, cut_id in enumerate(batch.cut_ids):
                    stored.append(_store_cut(writer, by_id[cut_id], targets, i, int(lengths[i])))
                    done_seconds += by_id[cut_id].duration
                if time.time() - last_log > 30:
                    last_log = time.time()
                    rate = done_seconds / (last_log - start)
                    log.info(
                        "%d/%d cuts, %.0f s audio/s, ETA %s",
                        len(stored),
                        len(cuts),
                        rate,
                        format_seconds((total_seconds - done_seconds) / max(rate, 1e-9)),
                    )
        # The manifest must name the archive's final path, not the temporary one.
        stored = [_rename_storage(cut, spec.fields, str(storage)) for cut in stored]
    hours = total_seconds / 3600
    with atomic_path(out_cuts) as tmp:
        CutSet.from_cuts(stored).to_file(tmp)
    size = storage.stat().st_size
    summary = {
        "format": CACHE_FORMAT,
        "teacher": str(teacher_path),
        "teacher_sha256": model_digest(teacher_path),
        "teacher_config_hash": teacher.meta.get("config_hash"),
        "cuts": str(cuts_path),
        "cuts_sha256": cached_file_digest(cuts_path),
        "features_sha256": features_digest(cuts_path),
        "num_cuts": len(stored),
        "hours": round(hours, 4),
        "layers": list(spec.layers),
        "posteriors": spec.posteriors,
        "fields": spec.fields,
        "tick_power": TICK_POWER,
        "max_abs_error": MAX_ABS_ERROR,
        "bytes": size,
        "megabytes_per_hour": round(size / 1e6 / max(hours, 1e-9), 2),
        "build_seconds": round(time.time() - start, 1),
    }
    write_json(out_dir / "summary.json", summary)
    log.info(
        "cached %s for %d cuts (%.2f h) in %s: %.1f MB, %.1f MB per hour of audio",
        ", ".join(spec.fields),
        len(stored),
        hours,
        format_seconds(summary["build_seconds"]),
        size / 1e6,
        summary["megabytes_per_hour"],
    )
    return summary


def _rename_storage(cut, fields: Iterable[str], storage_path: str):
    for field in fields:
        array: TemporalArray = cut.custom[field]
        array.array.storage_path = storage_path
    return cut


def _check_training_cuts(summary: dict, summary_path: Path, train_cuts: Path) -> None:
    """Refuse a cache built from another training-cuts manifest or other feature archives."""
    for key, what, digest in (
        ("cuts_sha256", f"training cuts manifest {train_cuts}", lambda: cached_file_digest(train_cuts)),
        ("features_sha256", f"feature archive(s) of {train_cuts}", lambda: features_digest(train_cuts)),
    ):
        have, want = summary.get(key), digest()
        if have != want:
            raise TeacherCacheError(
                f"teacher cache {summary_path} was built from another {what} than this run's "
                f"({key} {have} in the cache, {want} now): rebuild it (`streamkd cache-teacher`)"
            )


def open_teacher_cache(
    cache_cuts: Path,
    teacher_path: Path,
    spec: TargetSpec,
    train_cut_ids: Sequence[str],
    train_cuts: Optional[Path] = None,
) -> CutSet:
    """The cached cuts for ``train_cut_ids``, after checking that the cache fits this run.

    Refused, naming the cache: a summary that is missing or of another format, another
    teacher checkpoint (SHA-256), another training-cuts manifest or feature archive than
    ``train_cuts`` (SHA-256, checked when given), fields the student needs but the cache
    lacks, and training cuts without targets. Never trains on stale targets.
    """
    cache_cuts = Path(cache_cuts)
    summary_path = cache_cuts.parent / "summary.json"
    if not cache_cuts.is_file() or not summary_path.is_file():
        raise TeacherCacheError(
            f"teacher cache not found: {cache_cuts} and {summary_path} (run `streamkd cache-teacher`)"
        )

    summary = json.loads(summary_path.read_text())
    if summary.get("format") != CACHE_FORMAT:
        raise TeacherCacheError(f"{summary_path}: format {summary.get('format')!r} is not {CACHE_FORMAT!r}")
    digest = model_digest(teacher_path)
    if summary.get("teacher_sha256") != digest:
        raise TeacherCacheError(
            f"teacher cache {cache_cuts} was built from another teacher checkpoint than {teacher_path} "
            f"(sha256 {str(summary.get('teacher_sha256'))[:12]} vs {digest[:12]}): rebuild it"
        )
    if train_cuts is not None:
        _check_training_cuts(summary, summary_path, Path(train_cuts))
    have = TargetSpec(summary.get("layers", []), bool(summary.get("posteriors")))
    if not have.covers(spec):
        missing = sorted(set(spec.fields) - set(have.fields))
        raise TeacherCacheError(
            f"teacher cache {cache_cuts} lacks {', '.join(missing)} (it holds {', '.join(have.fields)})"
        )
    cached = {cut.id: cut for cut in load_cuts(cache_cuts)}
    missing_ids = [cut_id for cut_id in train_cut_ids if cut_id not in cached]
    if missing_ids:
        raise TeacherCacheError(
            f"teacher cache {cache_cuts} has no targets for {len(missing_ids)} training cut(s), e.g. "
            f"{', '.join(missing_ids[:3])}: it was built from other training cuts; rebuild it"
        )
    return CutSet.from_cuts(cached[cut_id] for cut_id in train_cut_ids)


def targets_for_objective(
    cached: Dict[str, Tensor], lengths: Tensor, num_frames: int, num_teacher_layers: int
) -> Tuple[Optional[Tensor], List[Optional[Tensor]]]:
    """Cached targets in the shapes the teacher's forward returns: ``(log_probs, hidden)``.

    ``hidden[m - 1]`` is teacher block m's output, ``None`` for blocks the cache does not hold;
    time is padded or cut to the student's ``num_frames``. The cached lengths must equal the
    student's encoder lengths utterance by utterance.
    """
    if not torch.equal(cached["lengths"].to(lengths.device), lengths):
        raise TeacherCacheError(
            f"cached teacher targets have {cached['lengths'].tolist()} frames but the student produced "
            f"{lengths.tolist()}: the cache does not match these features"
        )

    def fit(values: Tensor) -> Tensor:
        values = values.to(lengths.device)
        if values.size(1) >= num_frames:
            return values[:, :num_frames]
        return torch.nn.functional.pad(values, (0, 0, 0, num_frames - values.size(1)))

    hidden = [
        fit(cached[layer_field(m)]) if layer_field(m) in cached else None for m in range(1, num_teacher_layers + 1)
    ]
    log_probs = fit(cached[POSTERIOR_FIELD]) if POSTERIOR_FIELD in cached else None
    return log_probs, hidden
