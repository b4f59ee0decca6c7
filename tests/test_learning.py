"""The models learn: a tiny task that a working trainer solves and each sabotage fails.

The task is the tone corpus of tests/fakes.py: 26 words, each a tone of its own pitch, so a
small encoder can learn to recognise them from a few hundred utterances in seconds. Held-out
sentences are scored with greedy CTC decoding (torch alone) and the pipeline's WER scorer.

Each sabotage is one line of the training path changed, applied during training only, and is
a parametrized case that must FAIL the threshold the healthy run passes:

* ASR: no training at all; a learning rate of 0 after warm-up; transcripts rotated within
  every batch (each utterance trains on another's text, a mix-up confined to training).
* KD (aux branches on both student layers, distilled from the trained teacher): the KD
  term's sign flipped; the teacher's targets shuffled in time. The student must also come
  close to its teacher's true targets on held-out audio (the mean KD distance), which is what
  distillation is for: a student that ignores its teacher can still learn from CTC.

Thresholds, and the values reached on a 2-core AMD EPYC with torch 1.13.1 (the whole module
takes about 80 s there): test WER below 40 % for a model that learned. The streaming student
reaches 4.2 %; untrained 100.5 %, learning rate 0 after warm-up 100 %, rotated transcripts
100 %. The teacher reaches 0.0 %. The aux student reaches 17.6 % with a held-out KD distance of
0.69 (threshold 0.9); with the KD sign flipped 93.5 % and 46.7, with the teacher's targets
shuffled in time 1.9 % but 1.25: it learnt the task from CTC and nothing from its teacher.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamkd.data.loaders import eval_dataloader, load_cuts, unpack_batch
from streamkd.data.tokenizer import Tokenizer
from streamkd.decode.ctc_greedy import CtcGreedySearch
from streamkd.distill.config import KdConfig
from streamkd.distill.teacher import FrozenTeacher
from streamkd.model import build_asr_model
from streamkd.results.wer import score
from streamkd.training.config import OptimisationConfig
from streamkd.training.objectives import DistillationObjective, asr_objective
from streamkd.training.trainer import Trainer

from fakes import tone_corpus_with_features

pytestmark = pytest.mark.slow

ENCODER = dict(d_model=48, num_layers=2, num_heads=4, ff_dim=96, conv_kernel=5, dropout=0.0, subsampling_channels=8)
STUDENT = {**ENCODER, "causal": True, "chunk_size": 2}
TEACHER_EPOCHS = 12
STUDENT_EPOCHS = 8
# A model that learned the task stays below this test WER (%); every sabotage stays above it.
LEARNED_WER = 40.0
# A distilled student's mean held-out KD distance (l1_cos) to its teacher's targets, at most.
LEARNED_KD_DISTANCE = 0.9


def optimisation(num_epochs: int) -> OptimisationConfig:
    return OptimisationConfig(
        num_epochs=num_epochs, max_duration=10.0, peak_lr=3e-3, warmup_steps=20, spec_augment=False, log_interval=10**6
    )


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("tones")
    tone_corpus_with_features(out, {"train": 240, "test": 40}, vocab_size=60)
    return {
        "train": load_cuts(out / "cuts_train.jsonl.gz").to_eager(),
        "test": load_cuts(out / "cuts_test.jsonl.gz").to_eager(),
        "tokenizer": Tokenizer(out / "bpe.model"),
    }


def train(tones, objective, out_dir: Path, num_epochs: int) -> None:
    trainer = Trainer(
        objective, tones["tokenizer"], tones["train"], tones["test"], out_dir, optimisation(num_epochs), seed=1
    )
    trainer.run()


@torch.no_grad()
def heldout_wer(tones, model) -> float:
    model.eval()
    pairs = []
    for raw in eval_dataloader(tones["test"], max_duration=30.0):
        batch = unpack_batch(raw)
        log_probs, lengths, _ = model(batch.feats, batch.feat_lens)
        search = CtcGreedySearch(len(batch.texts))
        search.advance(log_probs, lengths)
        hyps = tones["tokenizer"].decode(search.finish())
        pairs += zip(batch.cut_ids, batch.texts, hyps)
    return score(pairs).wer  # percent


@torch.no_grad()
def held_out_kd_distance(tones, objective: DistillationObjective) -> float:
    """The KD term on the test cuts against the frozen teacher's true targets, frame-weighted."""
    objective.eval()
    total, frames = 0.0, 0
    for raw in eval_dataloader(tones["test"], max_duration=30.0):
        batch = unpack_batch(raw)
        targets = tones["tokenizer"].encode(batch.texts)
        _, stats, n = objective(batch.feats, batch.feat_lens, targets)
        total, frames = total + stats["kd"] * n, frames + n
    return total / frames


@pytest.fixture(scope="module")
def teacher(tones, tmp_path_factory):
    torch.manual_seed(0)
    model = build_asr_model(ENCODER, tones["tokenizer"].vocab_size)
    train(tones, asr_objective(model), tmp_path_factory.mktemp("teacher"), TEACHER_EPOCHS)
    return model


# -- sabotages: each changes one thing in the training path, for training only -------------


def lr_zero_after_warmup(monkeypatch):
    original = OptimisationConfig.lr_at
    monkeypatch.setattr(
        OptimisationConfig, "lr_at", lambda self, step: original(self, step) if step <= self.warmup_steps else 0.0
    )


def rotate_transcripts(monkeypatch):
    import streamkd.training.trainer as trainer_module

    def rotated(raw):
        batch = unpack_batch(raw)
        batch.texts = batch.texts[1:] + batch.texts[:1]
        return batch

    monkeypatch.setattr(trainer_module, "unpack_batch", rotated)


def flip_kd_sign(monkeypatch):
    from streamkd.distill.losses import HiddenLayerKd

    original = HiddenLayerKd.forward
    monkeypatch.setattr(HiddenLayerKd, "forward", lambda self, *args: -original(self, *args))


def shuffle_teacher_in_time(monkeypatch):
    original = FrozenTeacher.forward

    def shuffled(self, feats, feat_lens):
        log_probs, lengths, hidden = original(self, feats, feat_lens)
        order = torch.randperm(hidden[0].size(1))
        return log_probs, lengths, [h[:, order] for h in hidden]

    monkeypatch.setattr(FrozenTeacher, "forward", shuffled)


ASR_CASES = {"healthy": None, "lr-zero-after-warmup": lr_zero_after_warmup, "rotated-transcripts": rotate_transcripts}


@pytest.mark.parametrize("case", ["untrained", *ASR_CASES])
def test_a_streaming_student_learns_the_task_and_each_sabotage_fails(tones, case, tmp_path):
    torch.manual_seed(1)
    model = build_asr_model(STUDENT, tones["tokenizer"].vocab_size)
    if case != "untrained":
        with pytest.MonkeyPatch.context() as monkeypatch:
            if ASR_CASES[case] is not None:
                ASR_CASES[case](monkeypatch)
            train(tones, asr_objective(model), tmp_path, STUDENT_EPOCHS)
    wer = heldout_wer(tones, model)
    print(f"{case}: test WER {wer:.1f} %")
    if case == "healthy":
        assert wer < LEARNED_WER
    else:
        assert wer > LEARNED_WER, f"the threshold does not tell {case} from a model that learned"


def test_the_teacher_learns_the_task(tones, teacher):
    wer = heldout_wer(tones, teacher)
    print(f"teacher: test WER {wer:.1f} %")
    assert wer < LEARNED_WER / 2


KD_CASES = {"healthy": None, "kd-sign-flipped": flip_kd_sign, "teacher-shuffled-in-time": shuffle_teacher_in_time}


@pytest.mark.parametrize("case", KD_CASES)
def test_an_aux_student_learns_from_its_teacher_and_each_sabotage_fails(tones, teacher, case, tmp_path):
    torch.manual_seed(1)
    student = build_asr_model(STUDENT, tones["tokenizer"].vocab_size)
    kd = KdConfig(method="aux", student_layers=(1, 2), apc_shift=0, weight=3.0, teacher_targets="live")
    objective = DistillationObjective(student, FrozenTeacher(teacher), kd, spec_augment=False)
    with pytest.MonkeyPatch.context() as monkeypatch:
        if KD_CASES[case] is not None:
            KD_CASES[case](monkeypatch)
        train(tones, objective, tmp_path, STUDENT_EPOCHS)
    wer, distance = heldout_wer(tones, student), held_out_kd_distance(tones, objective)
    print(f"{case}: test WER {wer:.1f} %, held-out KD distance {distance:.3f}")
    learned = wer < LEARNED_WER and distance < LEARNED_KD_DISTANCE
    assert learned == (case == "healthy"), (case, wer, distance)
