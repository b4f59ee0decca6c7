"""`streamkd export --format sherpa-onnx` loaded by the real sherpa-onnx wheel.

Small random students (chunk 3, two chunks of left context) with biased output layers so that
they emit plenty of tokens; audio padded by :func:`padded_length`, so that sherpa-onnx and
`streamkd decode` see the same feature windows. Every search gives the same hypotheses in both
on every file: CTC greedy, transducer greedy and modified beam search (beam 4). The transducer
student's `<unk>` logit is pushed down: sherpa-onnx's transducer search treats `<unk>` as blank,
streamkd's emits it, and with it suppressed the two searches are the same algorithm.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch

from streamkd.data.tokenizer import Tokenizer
from streamkd.deploy.audio import SAMPLE_RATE, fbank, load_audio
from streamkd.deploy.sherpa import padded_length
from streamkd.k2_support import k2_available
from streamkd.model import build_asr_model
from streamkd.model.checkpoint import save_model

from helpers import error_line, train_tiny_bpe
from helpers import streamkd_cli as streamkd

sherpa_onnx = pytest.importorskip("sherpa_onnx")

TINY = dict(
    feat_dim=80, d_model=16, num_layers=2, num_heads=2, ff_dim=32, conv_kernel=3, dropout=0.0, subsampling_channels=4
)
SENTENCES = ["THE CAT SAT", "A DOG", "ON THE MAT THE CAT", "DOG", "THE DOG SAT ON THE CAT"]
CHUNK, LEFT = 3, 2
UNK_ID = 1


def student(vocab: int, head: str, left_chunks: int = LEFT):
    torch.manual_seed(1)
    model = build_asr_model(dict(TINY, causal=True, chunk_size=CHUNK, left_chunks=left_chunks), vocab, {"type": head})
    with torch.no_grad():  # a random model: make it emit tokens rather than only blanks
        if model.ctc is not None:
            model.ctc.proj.bias[0] = -2.0
        if model.transducer is not None:
            model.transducer.joiner.output.bias[0] = -1.0
            model.transducer.joiner.output.bias[UNK_ID] = -20.0
    return model.eval()


def tones(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = sum(np.sin(2 * np.pi * f * t) * rng.uniform(0.1, 0.3) for f in rng.uniform(100, 3000, size=4))
    return (0.3 * audio + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("sherpa")
    bpe = train_tiny_bpe(d, SENTENCES * 10, vocab_size=24)
    vocab = Tokenizer(bpe).vocab_size
    audio = d / "audio"
    audio.mkdir()
    for i, seconds in enumerate((1.3, 2.1, 0.9, 1.7)):
        samples = tones(seconds, i)
        padded = np.concatenate([samples, np.zeros(padded_length(len(samples), CHUNK) - len(samples), np.float32)])
        sf.write(audio / f"utt{i}.wav", padded, SAMPLE_RATE, subtype="FLOAT")
    checkpoints = {}
    for head in ("ctc", "transducer") if k2_available() else ("ctc",):  # transducer heads need k2
        checkpoints[head] = d / f"{head}.pt"
        save_model(checkpoints[head], student(vocab, head), meta={"role": "student"})
        result = streamkd(
            "export", "--checkpoint", checkpoints[head], "--bpe-model", bpe, "--out-dir", d / f"sherpa-{head}",
            "--format", "sherpa-onnx",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    from streamkd.data.features import compute_fbank

    recordings = [Recording.from_file(p, recording_id=p.stem) for p in sorted(audio.glob("*.wav"))]
    sups = [SupervisionSegment(r.id, r.id, 0.0, r.duration, text="THE CAT") for r in recordings]
    RecordingSet.from_recordings(recordings).to_file(d / "rec.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(d / "sup.jsonl.gz")
    compute_fbank(d / "rec.jsonl.gz", d / "sup.jsonl.gz", d / "cuts.jsonl.gz", d / "fbank", on_the_fly=True)
    return d, bpe, audio, checkpoints


def sherpa_hypotheses(folder, audio, head: str, method: str = "greedy_search") -> dict:
    if head == "ctc":
        recognizer = sherpa_onnx.OnlineRecognizer.from_zipformer2_ctc(
            tokens=str(folder / "tokens.txt"), model=str(folder / "model.onnx"), num_threads=1
        )
    else:
        recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens=str(folder / "tokens.txt"),
            encoder=str(folder / "encoder.onnx"),
            decoder=str(folder / "decoder.onnx"),
            joiner=str(folder / "joiner.onnx"),
            num_threads=1,
            model_type="ebranchformer",
            decoding_method=method,
            max_active_paths=4,
        )
    return decode_files(recognizer, audio)


def decode_files(recognizer, audio) -> dict:
    """sherpa-onnx's hypothesis of every WAV of ``audio``, by file stem."""
    hyps = {}
    for path in sorted(audio.glob("*.wav")):
        samples, rate = sf.read(path, dtype="float32")
        stream = recognizer.create_stream()
        stream.accept_waveform(rate, samples)
        stream.input_finished()
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
        hyps[path.stem] = recognizer.get_result(stream).strip()
    return hyps


def streamkd_hypotheses(setup, head: str, method: str) -> dict:
    d, bpe, _, checkpoints = setup
    hyps = d / f"hyps-{head}-{method}.jsonl"
    args = ["decode", "--checkpoint", checkpoints[head], "--cuts", d / "cuts.jsonl.gz", "--bpe-model", bpe]
    result = streamkd(*args, "--method", method, "--hyps", hyps, "--beam", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    return {row["id"]: row["hyp"] for row in map(json.loads, hyps.read_text().splitlines())}


@pytest.mark.parametrize(
    "head, ours, theirs",
    [
        ("ctc", "ctc-greedy-streaming", "greedy_search"),
        pytest.param("transducer", "rnnt-greedy-streaming", "greedy_search", marks=pytest.mark.k2),
        pytest.param("transducer", "rnnt-modified-beam-streaming", "modified_beam_search", marks=pytest.mark.k2),
    ],
)
def test_sherpa_onnx_gives_streamkds_hypotheses(setup, head, ours, theirs):
    d, _, audio, _ = setup
    expected = streamkd_hypotheses(setup, head, ours)
    got = sherpa_hypotheses(d / f"sherpa-{head}", audio, head, theirs)
    assert sum(bool(h) for h in expected.values()) == 4, "the test model should emit on every file"
    assert got == expected


def test_export_writes_the_contracts_metadata(setup):
    d, *_ = setup
    ctc = {p.key: p.value for p in onnx.load(str(d / "sherpa-ctc/model.onnx")).metadata_props}
    assert ctc["model_type"] == "zipformer2" and ctc["cnn_module_kernels"] == str(2 * (TINY["conv_kernel"] - 1))
    assert (ctc["left_context_len"], ctc["T"], ctc["decode_chunk_len"]) == (str(LEFT * CHUNK), "15", "12")
    tokens = (d / "sherpa-ctc/tokens.txt").read_text().splitlines()
    assert tokens[0] == "<blk> 0" and len(tokens) == Tokenizer(d / "bpe.model").vocab_size


@pytest.mark.k2
def test_transducer_export_writes_the_ebranchformer_metadata(setup):
    d, *_ = setup
    encoder = {p.key: p.value for p in onnx.load(str(d / "sherpa-transducer/encoder.onnx")).metadata_props}
    assert encoder["model_type"] == "ebranchformer" and encoder["intermediate_size"] == str(2 * TINY["d_model"])
    assert (encoder["left_context_len"], encoder["head_dim"]) == (str(LEFT * CHUNK), str(TINY["d_model"] // 2))
    decoder = {p.key: p.value for p in onnx.load(str(d / "sherpa-transducer/decoder.onnx")).metadata_props}
    assert decoder["context_size"] == "2"


def test_unlimited_left_context_is_refused_naming_the_option(setup, tmp_path):
    d, bpe, *_ = setup
    unlimited = tmp_path / "unlimited.pt"
    save_model(unlimited, student(Tokenizer(bpe).vocab_size, "ctc", left_chunks=-1), meta={"role": "student"})
    args = ["export", "--checkpoint", unlimited, "--bpe-model", bpe, "--out-dir", tmp_path / "out"]
    line = error_line(streamkd(*args, "--format", "sherpa-onnx"))
    assert "sherpa-onnx needs a fixed left context" in line and "give --left-chunks N" in line
    assert not (tmp_path / "out" / "model.onnx").exists()
    # With a fixed left context it exports, and says that it differs from training.
    result = streamkd(*args, "--format", "sherpa-onnx", "--left-chunks", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "left context of 4 chunks differs from the unlimited it was trained with" in result.stderr


def test_kaldi_native_fbank_with_sherpas_settings_matches_lhotse(setup):
    """sherpa-onnx's features (kaldi-native-fbank: 80 bins, high_freq -400, snip_edges false,
    dither 0) against the fbank streamkd trains on (lhotse): same frames, |difference| < 1e-3."""
    import kaldi_native_fbank as knf

    _, _, audio, _ = setup
    for path in sorted(audio.glob("*.wav")):
        samples = load_audio(path)
        options = knf.FbankOptions()
        options.frame_opts.dither = 0.0
        options.frame_opts.snip_edges = False
        options.mel_opts.num_bins = 80
        options.mel_opts.high_freq = -400
        online = knf.OnlineFbank(options)
        online.accept_waveform(SAMPLE_RATE, samples.tolist())
        online.input_finished()
        theirs = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
        ours = fbank(samples).numpy()
        assert theirs.shape == ours.shape
        assert float(np.abs(theirs - ours).max()) < 1e-3


# -- a trained student with a word LM: HLG decoding in sherpa-onnx -------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small streaming CTC student trained on the tone corpus (left context 2 chunks of 2),
    its word LM and HLG, the test audio padded by the sherpa-onnx rule, and both exports."""
    from lhotse import load_manifest

    from streamkd.data.features import compute_fbank
    from streamkd.data.loaders import load_cuts
    from streamkd.lang.hlg import compile_hlg
    from streamkd.lang.ngram import train_ngram_lm
    from streamkd.training.config import OptimisationConfig
    from streamkd.training.objectives import asr_objective
    from streamkd.training.trainer import Trainer

    from fakes import tone_corpus_with_features

    d = tmp_path_factory.mktemp("sherpa-trained")
    manifests = tone_corpus_with_features(d, {"train": 240, "test": 30}, vocab_size=60)
    cuts = load_cuts(d / "cuts_train.jsonl.gz").to_eager()
    texts = [s.text for c in cuts for s in c.supervisions]
    tokenizer = Tokenizer(d / "bpe.model")
    torch.manual_seed(0)
    encoder = dict(TINY, d_model=48, num_heads=4, ff_dim=96, conv_kernel=5, causal=True, chunk_size=2, left_chunks=2)
    model = build_asr_model(encoder, tokenizer.vocab_size, {"type": "ctc"})
    opt = OptimisationConfig(num_epochs=8, max_duration=10.0, peak_lr=3e-3, warmup_steps=20, spec_augment=False)
    Trainer(asr_objective(model), tokenizer, cuts, cuts, d / "run", opt, seed=1).run()
    train_ngram_lm(texts, d / "lm.arpa", order=2)
    compile_hlg(d / "bpe.model", d / "lm.arpa", order=2).save(d / "HLG.pt")
    # The test audio, padded so that both decoders see the same windows; float features.
    audio = d / "padded"
    audio.mkdir()
    recordings = load_manifest(manifests["test"][0])
    for recording in recordings:
        samples = recording.load_audio()[0].astype(np.float32)
        padded = np.concatenate([samples, np.zeros(padded_length(len(samples), 2) - len(samples), np.float32)])
        sf.write(audio / f"{recording.id}.wav", padded, SAMPLE_RATE, subtype="FLOAT")
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    padded_recordings = [Recording.from_file(p, recording_id=p.stem) for p in sorted(audio.glob("*.wav"))]
    texts_by_id = {s.recording_id: s.text for s in load_manifest(manifests["test"][1])}
    sups = [SupervisionSegment(r.id, r.id, 0.0, r.duration, text=texts_by_id[r.id]) for r in padded_recordings]
    RecordingSet.from_recordings(padded_recordings).to_file(d / "rec.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(d / "sup.jsonl.gz")
    compute_fbank(d / "rec.jsonl.gz", d / "sup.jsonl.gz", d / "cuts_padded.jsonl.gz", d / "fbank", on_the_fly=True)
    result = streamkd(
        "export", "--checkpoint", d / "run" / "model.pt", "--bpe-model", d / "bpe.model", "--out-dir", d / "sherpa",
        "--format", "sherpa-onnx", "--hlg", d / "HLG.pt",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return d, audio


def decode_hypotheses(d, method: str) -> list:
    hyps = d / f"hyps-{method}.jsonl"
    graph = ["--graph", d / "HLG.pt"] if "hlg" in method else []
    args = ["decode", "--checkpoint", d / "run/model.pt", "--cuts", d / "cuts_padded.jsonl.gz"]
    result = streamkd(*args, "--bpe-model", d / "bpe.model", "--method", method, "--hyps", hyps, *graph)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in hyps.read_text().splitlines()]


@pytest.mark.k2
def test_chunk_by_chunk_hlg_decoding_ends_with_the_whole_utterance_best_path(trained):
    """Chunks of 2 encoder frames: k2's online intersecter drifted here ("OSCAR MIKE INDIA
    QUEBEC" became "CHARLIE VICTOR"); the prefix search must give ctc-hlg's hypotheses."""
    d, _ = trained
    assert decode_hypotheses(d, "ctc-hlg-streaming") == decode_hypotheses(d, "ctc-hlg")


@pytest.mark.k2
@pytest.mark.parametrize("ours", ["ctc-greedy-streaming", "ctc-hlg-streaming"])
def test_a_trained_student_decodes_alike_in_sherpa_onnx_greedy_and_with_hlg(trained, ours):
    d, audio = trained
    rows = decode_hypotheses(d, ours)
    expected = {r["id"]: r["hyp"].strip() for r in rows}  # a last "▁" piece decodes to a trailing space
    from streamkd.results.wer import score

    wer = score((r["id"], r["ref"], r["hyp"]) for r in rows).wer
    if "hlg" not in ours:
        assert wer < 20, "the student should have learnt the task"
    assert sum(bool(h) for h in expected.values()) >= len(rows) - 2, "the searches should output words"
    folder = d / "sherpa"
    recognizer = sherpa_onnx.OnlineRecognizer.from_zipformer2_ctc(
        tokens=str(folder / "tokens.txt"),
        model=str(folder / "model.onnx"),
        num_threads=1,
        ctc_graph=str(folder / "HLG.fst") if "hlg" in ours else "",
    )
    assert decode_files(recognizer, audio) == expected
