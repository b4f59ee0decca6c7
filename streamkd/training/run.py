"""Build and train the teacher or a streaming student from plain config dicts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch

from streamkd.config import ConfigError, config_hash
from streamkd.data.loaders import cut_features, load_cuts
from streamkd.data.tokenizer import Tokenizer
from streamkd.distill.config import KdConfig
from streamkd.distill.teacher import load_teacher
from streamkd.distill.teacher_cache import open_teacher_cache
from streamkd.dynamic_chunk import DYNAMIC, DynamicChunk
from streamkd.model.asr import AsrModel, build_asr_model
from streamkd.model.checkpoint import model_digest
from streamkd.model.heads import HeadConfig
from streamkd.model.subsampling import INPUT_FRAME_SHIFT_MS, SUBSAMPLING_FACTOR
from streamkd.provenance import training_provenance
from streamkd.training.config import OptimisationConfig
from streamkd.training.distributed import env_rank
from streamkd.training.objectives import DistillationObjective, asr_objective
from streamkd.training.trainer import Trainer, seed_everything

log = logging.getLogger(__name__)

CMVN_CUTS = 1000  # utterances sampled for the global feature statistics
ENCODER_FRAME_SECONDS = SUBSAMPLING_FACTOR * INPUT_FRAME_SHIFT_MS / 1000


def check_chunk_fits(chunk_size: int, cuts, source: Path) -> None:
    """A chunk longer than every utterance would silently train a full-context model."""
    longest = max(c.duration for c in cuts)
    if chunk_size * ENCODER_FRAME_SECONDS >= longest:
        raise ConfigError(
            f"chunk_size={chunk_size} ({chunk_size * ENCODER_FRAME_SECONDS:.2f} s) is not shorter than "
            f"the longest training utterance in {source} ({longest:.2f} s): the student would not stream"
        )


def _layers_text(layers: Sequence[int]) -> Optional[str]:
    return ",".join(str(layer) for layer in layers) or None


def kd_record_fields(kd: KdConfig, pairs: Sequence[Tuple[int, int]]) -> Dict[str, Any]:
    """The KD columns of the run record (null where a field does not apply to the method)."""
    distils = kd.method != "none"
    return {
        "method": kd.method,
        "kd_layers": _layers_text([s for s, _ in pairs]),
        "kd_teacher_layers": _layers_text([t for _, t in pairs]),
        "apc_shift": kd.recorded_shift,
        "kd_loss": ("kl" if kd.method == "token" else kd.loss) if distils else None,
        "kd_weight": kd.weight if distils else None,
        "kd": kd.to_dict() if distils else None,
    }


def build_objective(
    student: AsrModel,
    kd: KdConfig,
    opt: OptimisationConfig,
    teacher_checkpoint: Optional[Path],
    teacher_encoder: Optional[Mapping[str, Any]] = None,
):
    """The plain ASR objective (CTC and/or RNN-T, per the head) for ``none``; otherwise the student, the frozen teacher and the KD term."""
    if kd.method == "none":
        if teacher_checkpoint is not None:
            raise ConfigError(f"method 'none' uses no teacher, but teacher checkpoint {teacher_checkpoint} was given")
        return asr_objective(student)
    if teacher_checkpoint is None:
        raise ConfigError(f"method {kd.method!r} needs a teacher checkpoint")
    teacher = load_teacher(
        teacher_checkpoint,
        vocab_size=student.vocab_size,
        feat_dim=student.encoder.config.feat_dim,
        teacher_layers=kd.teacher_layers or (),
        expected_encoder=teacher_encoder,
    )
    return DistillationObjective(student, teacher, kd, spec_augment=opt.spec_augment)


def use_teacher_cache(
    objective,
    kd: KdConfig,
    train,
    teacher_targets: Optional[Path],
    teacher_checkpoint: Optional[Path],
    train_cuts: Optional[Path] = None,
):
    """The training cuts and the cached fields to read: the cache's cuts when ``kd.teacher_targets`` is ``cache``."""
    cached = kd.method != "none" and kd.teacher_targets == "cache"
    if not cached:
        if teacher_targets is not None:
            raise ConfigError(
                f"a teacher cache ({teacher_targets}) was given but kd.teacher_targets is "
                f"{kd.teacher_targets!r} and the method is {kd.method!r}"
            )
        return train, []
    if teacher_targets is None:
        raise ConfigError("kd.teacher_targets is 'cache' but no teacher cache manifest (--teacher-targets) was given")
    spec = objective.target_spec
    cuts = open_teacher_cache(teacher_targets, teacher_checkpoint, spec, [c.id for c in train], train_cuts)
    log.info(
        "KD targets %s from the teacher cache %s: the teacher runs on the dev set only", spec.fields, teacher_targets
    )
    return cuts, spec.fields


def train_asr(
    *,
    role: str,
    train_cuts: Path,
    dev_cuts: Path,
    bpe_model: Path,
    out_dir: Path,
    encoder: Mapping[str, Any],
    optimisation: Mapping[str, Any],
    seed: int,
    chunk_size: Optional[int] = None,
    left_chunks: int = -1,
    threads: int = 1,
    kd: Optional[Mapping[str, Any]] = None,
    teacher_checkpoint: Optional[Path] = None,
    teacher_encoder: Optional[Mapping[str, Any]] = None,
    head: Optional[Mapping[str, Any]] = None,
    teacher_targets: Optional[Path] = None,
    dynamic_chunk: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Train a full-context teacher (``role='teacher'``) or a streaming student.

    ``kd`` holds :class:`~streamkd.distill.config.KdConfig` options (method, layers, APC
    shift, loss, ...); absent or ``method='none'`` trains the baseline student. KD methods
    need ``teacher_checkpoint``; ``teacher_encoder`` (the configured teacher's options) is
    checked against it. With ``kd.teacher_targets: cache``, ``teacher_targets`` is the
    teacher cache's cut manifest (``streamkd cache-teacher``), read instead of running the
    teacher in every training step. ``dynamic_chunk`` (the config's ``grid.dynamic_chunk``,
    instead of ``chunk_size``) trains a dynamic-chunk student that samples its chunk size per
    batch (:mod:`streamkd.dynamic_chunk`); its dev loss is computed at the largest size.
    """
    if role not in ("teacher", "student"):
        raise ValueError(f"unknown role {role!r}: expected 'teacher' or 'student'")
    try:
        kd_config = KdConfig.from_dict(kd or {})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid distillation settings: {e}") from e
    if role == "teacher" and kd_config.method != "none":
        raise ConfigError(f"the teacher is trained without distillation, got method {kd_config.method!r}")
    torch.set_num_threads(threads)
    opt = OptimisationConfig.from_dict(optimisation)
    tokenizer = Tokenizer(bpe_model)
    train = load_cuts(train_cuts, opt.max_utterance_seconds).to_eager()
    dev = load_cuts(dev_cuts, opt.max_utterance_seconds).to_eager()
    for split, cuts, path in (("training", train, train_cuts), ("dev", dev, dev_cuts)):
        if len(cuts) == 0:
            raise ConfigError(
                f"{path}: no {split} cut left at most {opt.max_utterance_seconds} s long "
                "(training.max_utterance_seconds), or the manifest is empty"
            )
    streaming = role == "student"
    dynamic = None
    if dynamic_chunk is not None:
        if not streaming or chunk_size is not None:
            raise ConfigError("dynamic_chunk applies to a student only, and replaces chunk_size (give one of them)")
        try:
            dynamic = DynamicChunk.from_dict(dynamic_chunk)
        except ValueError as e:
            raise ConfigError(f"invalid dynamic-chunk settings: {e}") from e
        for size in dynamic.chunk_sizes:
            check_chunk_fits(size, train, train_cuts)
    elif streaming:
        if chunk_size is None or chunk_size < 1:
            raise ConfigError(f"a streaming student needs chunk_size >= 1, got {chunk_size}")
        check_chunk_fits(chunk_size, train, train_cuts)
    encoder_config = {
        **encoder,
        "causal": streaming,
        "chunk_size": chunk_size if streaming else None,
        "left_chunks": left_chunks,
    }
    if dynamic is not None:
        # Only dynamic students carry the key: fixed-chunk runs keep their config hashes.
        encoder_config["dynamic_chunk"] = dynamic.to_dict()
    head_config = HeadConfig.from_dict(head)
    seed_everything(seed)
    model = build_asr_model(encoder_config, tokenizer.vocab_size, head_config)
    if dynamic is not None:
        model.encoder.eval_chunk_size = dynamic.largest
        log.info(
            "dynamic-chunk student: chunk sizes %s per batch%s; dev loss at chunk size %d",
            dynamic.describe(),
            f", left chunks {list(dynamic.left_chunks)}" if dynamic.left_chunks else "",
            dynamic.largest,
        )
    model.encoder.cmvn.fit(cut_features(c) for c in train.subset(first=CMVN_CUTS))
    objective = build_objective(model, kd_config, opt, teacher_checkpoint, teacher_encoder)
    train, teacher_fields = use_teacher_cache(
        objective, kd_config, train, teacher_targets, teacher_checkpoint, train_cuts
    )
    pairs = getattr(objective, "pairs", [])
    hashed = [dict(encoder_config), opt.to_dict(), {"seed": seed, "vocab": tokenizer.vocab_size}]
    if head_config.type != "ctc":
        # A CTC head has no options: leaving it out keeps the hashes of earlier CTC runs.
        hashed.append(head_config.to_dict())
    if kd_config.method != "none":
        # The baseline's hash stays as it was; a KD run also depends on its teacher.
        hashed.append({**kd_config.to_dict(), "pairs": pairs, "teacher": objective.teacher.meta.get("config_hash")})
    meta = {
        "role": role,
        **kd_record_fields(kd_config, pairs),
        "chunk_size": (DYNAMIC if dynamic is not None else chunk_size) if streaming else None,
        "left_chunks": left_chunks if streaming else None,
        "head": head_config.type,
        "config_hash": config_hash(*hashed),
        # The student plus KD branches/projections; the frozen teacher is not trained.
        "num_params_training": sum(p.numel() for p in objective.parameters() if p.requires_grad),
        "teacher_checkpoint": str(teacher_checkpoint) if teacher_checkpoint else None,
        # Which teacher, by its config and weights: a retrain that reproduces it is the same teacher.
        "teacher_sha256": model_digest(teacher_checkpoint) if teacher_checkpoint else None,
    }
    if dynamic is not None:
        meta["dynamic_chunk"] = dynamic.to_dict()
    if role == "teacher":
        meta["method"] = "teacher"
    if env_rank() == 0:  # only the main process writes the summary: the others skip the hashing
        settings = {
            "role": role,
            "encoder": encoder_config,
            "optimisation": opt.to_dict(),
            "head": head_config.to_dict(),
            "kd": {**kd_config.to_dict(), "pairs": pairs},
            "seed": seed,
        }
        meta["provenance"] = training_provenance(train_cuts, dev_cuts, bpe_model, settings)
    log.info(
        "training %s (method %s, %s head): %s, %d parameters deployed, %d trained",
        meta["role"],
        meta["method"],
        head_config.type,
        encoder_config,
        model.num_parameters(),
        meta["num_params_training"],
    )
    if pairs:
        log.info("KD layer pairs (student -> teacher): %s, APC shift %d", pairs, kd_config.shift)
    trainer = Trainer(objective, tokenizer, train, dev, out_dir, opt, seed, meta, teacher_fields=teacher_fields)
    return trainer.run()
