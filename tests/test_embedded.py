"""Tests of the embedded corpus: text source, planning, synthesis, manifests, checks."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import soundfile as sf
from lhotse import load_manifest
from lhotse.audio import AudioSource
from lhotse.qa import validate_recordings_and_supervisions

from streamkd.data.embedded import (
    SPLITS,
    CorpusConfig,
    UtterancePlan,
    Voice,
    add_noise,
    assign_voices,
    check_voice,
    measured_snr_db,
    plan_corpus,
    prepare_embedded_corpus,
    recording_problem,
    require_binary,
    supervision_problem,
    synthesise_clean,
)
from streamkd.data.text import DEFAULT_FORTUNES_DIR, load_sentences, normalize_text

from helpers import HAVE_TTS, default_corpus_config, mixed_engine_corpus_config, requires_tts

HAVE_FORTUNES = DEFAULT_FORTUNES_DIR.is_dir()
requires_fortunes = pytest.mark.skipif(
    not HAVE_FORTUNES, reason="needs Debian's fortune files (apt-get install fortunes fortunes-min)"
)

# The test pool is the 7 default voices plus the held-out one, so 8 test
# utterances are enough for every voice to appear once.
TINY = dict(num_train=10, num_dev=4, num_test=8)


def tiny_config(**overrides) -> CorpusConfig:
    return mixed_engine_corpus_config(**{**TINY, **overrides})


def manifest_lines(output_dir: Path) -> Dict[str, str]:
    """Decompressed manifest contents with the output directory made neutral."""
    out = {}
    for path in sorted((output_dir / "manifests").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out[path.name] = f.read().replace(str(output_dir.resolve()), "<OUT>")
    return out


def wav_bytes(output_dir: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(output_dir)): p.read_bytes() for p in sorted(output_dir.glob("wav/*/*.wav"))}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    if not (HAVE_TTS and HAVE_FORTUNES):
        pytest.skip("needs espeak-ng, flite and fortune files")
    out = tmp_path_factory.mktemp("corpus_serial")
    prepare_embedded_corpus(tiny_config(), out, num_jobs=1)
    return out


def load_split(output_dir: Path, split: str):
    manifests = output_dir / "manifests"
    return (
        load_manifest(manifests / f"embedded_recordings_{split}.jsonl.gz"),
        load_manifest(manifests / f"embedded_supervisions_{split}.jsonl.gz"),
    )


# --------------------------------------------------------------------------
# Text


def test_normalize_text_uppercases_and_strips_punctuation():
    text = '\'Twas well-known -- don\u2019t "quote", (really)?'
    assert normalize_text(text) == "TWAS WELL KNOWN DON'T QUOTE REALLY"


def test_load_sentences_filters_and_normalises(tmp_path):
    (tmp_path / "topic").write_text(
        "The quick brown fox jumps over the lazy dog.  Short one.\n"
        "%\n"
        "Nobody expects the Spanish Inquisition in the morning!\n"
        "\t\t-- Monty Python\n"
        "%\n"
        "Call me at 555 and ask for the manager please.\n"
        "%\n"
        "Send all your mail to root@localhost right now please.\n"
        "%\n"
        "Is this the real life or is it just fantasy?\n"
        "%\n"
        "Is this the REAL life or is it just fantasy?\n",
        encoding="utf-8",
    )
    (tmp_path / "topic.dat").write_bytes(b"\x00\x01 index, not text")
    assert load_sentences(tmp_path, min_words=5, max_words=14) == [
        "IS THIS THE REAL LIFE OR IS IT JUST FANTASY",
        "NOBODY EXPECTS THE SPANISH INQUISITION IN THE MORNING",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    ]


@requires_fortunes
def test_debian_fortunes_give_clean_sentences():
    sentences = load_sentences()
    assert len(sentences) > 10000
    assert sentences == sorted(set(sentences))
    for sentence in sentences:
        words = sentence.split()
        assert 5 <= len(words) <= 14
        assert all(w.replace("'", "").isalpha() and w.isupper() and w.isascii() for w in words), sentence


def test_missing_source_dir_names_path_and_package(tmp_path):
    missing = tmp_path / "no-fortunes-here"
    with pytest.raises(FileNotFoundError, match="no-fortunes-here") as info:
        load_sentences(missing)
    assert "fortunes-min" in str(info.value)


def test_source_without_usable_sentences_raises(tmp_path):
    (tmp_path / "numbers").write_text("1 2 3 4 5 6\n%\nToo short.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=str(tmp_path)):
        load_sentences(tmp_path)


# --------------------------------------------------------------------------
# Configuration and planning


def test_config_round_trips_and_rejects_unknown_keys():
    config = mixed_engine_corpus_config()
    assert CorpusConfig.from_dict(config.to_dict()) == config
    bad = {**config.to_dict(), "num_trian": 5}
    with pytest.raises(ValueError, match="num_trian"):
        CorpusConfig.from_dict(bad)
    bad_voice = config.to_dict()
    bad_voice["voices"][0]["gender"] = "f"
    with pytest.raises(ValueError, match="gender"):
        CorpusConfig.from_dict(bad_voice)


def test_config_rejects_heldout_voice_used_in_training():
    config = default_corpus_config()
    with pytest.raises(ValueError, match="held-out"):
        replace(config, heldout_test_voice=Voice("other-name", "espeak-ng", "en-us"))


def test_assign_voices_always_includes_first_voice_in_equal_shares():
    pool = [Voice(f"v{i}", "espeak-ng", "en-us") for i in range(8)]
    for seed in range(50):
        for n in (1, 3, 8, 21):
            assigned = assign_voices(n, pool, seed)
            assert pool[0] in assigned
            counts = [assigned.count(v) for v in pool]
            assert max(counts) - min(counts) <= 1


@requires_fortunes
def test_plan_is_deterministic_and_seed_dependent():
    sentences = load_sentences()
    config = tiny_config()
    assert plan_corpus(config, sentences) == plan_corpus(config, sentences)
    other = plan_corpus(replace(config, seed=1), sentences)
    assert [p.text for p in other["train"]] != [p.text for p in plan_corpus(config, sentences)["train"]]


@requires_fortunes
def test_growing_train_keeps_dev_and_test():
    sentences = load_sentences()
    small = plan_corpus(tiny_config(), sentences)
    large = plan_corpus(tiny_config(num_train=50), sentences)
    assert small["test"] == large["test"] and small["dev"] == large["dev"]


# --------------------------------------------------------------------------
# The built corpus


@requires_tts
def test_same_seed_gives_identical_corpus_with_any_num_jobs(corpus_dir, tmp_path):
    parallel = tmp_path / "parallel"
    prepare_embedded_corpus(tiny_config(), parallel, num_jobs=2)
    assert manifest_lines(parallel) == manifest_lines(corpus_dir)
    assert wav_bytes(parallel) == wav_bytes(corpus_dir)
    assert (parallel / "manifests" / "embedded_stats.json").read_text() == (
        corpus_dir / "manifests" / "embedded_stats.json"
    ).read_text()


@requires_tts
def test_resumed_build_is_byte_identical(corpus_dir, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(corpus_dir, resumed)
    shutil.rmtree(resumed / "manifests")
    for wav in sorted(resumed.glob("wav/train/*.wav"))[::2]:
        wav.unlink()
    stale = resumed / "wav" / "train" / ".left-over.wav.123.abcd.tmp"
    stale.write_bytes(b"partial")
    prepare_embedded_corpus(tiny_config(), resumed, num_jobs=1)
    assert wav_bytes(resumed) == wav_bytes(corpus_dir)
    assert manifest_lines(resumed) == manifest_lines(corpus_dir)
    assert not stale.exists()


@requires_tts
def test_output_dir_from_another_config_is_refused(corpus_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(corpus_dir, other)
    with pytest.raises(ValueError, match="different configuration"):
        prepare_embedded_corpus(tiny_config(seed=7), other, num_jobs=1)


@requires_tts
def test_splits_are_disjoint_and_heldout_voice_is_test_only(corpus_dir):
    config = tiny_config()
    held = config.heldout_test_voice.name
    texts, speakers = {}, {}
    for split in SPLITS:
        _, supervisions = load_split(corpus_dir, split)
        texts[split] = {s.text for s in supervisions}
        speakers[split] = {s.speaker for s in supervisions}
        assert len(texts[split]) == len(supervisions)
    assert not texts["train"] & texts["dev"]
    assert not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]
    assert held in speakers["test"]
    assert held not in speakers["train"] | speakers["dev"]
    assert speakers["test"] == {v.name for v in config.voices} | {held}


@requires_tts
def test_manifests_are_valid_16k_pcm(corpus_dir):
    for split in SPLITS:
        recordings, supervisions = load_split(corpus_dir, split)
        assert len(recordings) == len(supervisions) == TINY[f"num_{split}"]
        validate_recordings_and_supervisions(recordings, supervisions)
        assert [r.id for r in recordings if recording_problem(r)] == []
        assert [s.id for s in supervisions if supervision_problem(s)] == []
        for recording in recordings:
            assert recording.sampling_rate == 16000
            assert recording.duration > 0.5
            assert recording.id.startswith(f"embedded-{split}-")
            info = sf.info(recording.sources[0].source)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        for supervision in supervisions:
            assert supervision.id.endswith(supervision.speaker)
            assert supervision.language == "English"
            assert supervision.duration == recordings[supervision.recording_id].duration


@requires_tts
def test_outputs_are_world_readable(corpus_dir):
    for path in [*corpus_dir.glob("wav/*/*.wav"), *corpus_dir.glob("manifests/*")]:
        mode = path.stat().st_mode
        assert mode & stat.S_IRGRP and mode & stat.S_IROTH, path


@requires_tts
def test_stats_file_describes_the_corpus(corpus_dir):
    import json

    stats = json.loads((corpus_dir / "manifests" / "embedded_stats.json").read_text())
    assert stats["num_utterances"] == {s: TINY[f"num_{s}"] for s in SPLITS}
    assert all(stats["hours"][s] > 0 for s in SPLITS)
    assert stats["train_vocabulary_size"] > 20
    assert sum(stats["voices"]["test"].values()) == TINY["num_test"]


@requires_tts
def test_stored_audio_is_clean_speech_plus_requested_noise(corpus_dir):
    recordings, supervisions = load_split(corpus_dir, "dev")
    config = tiny_config()
    voices = {v.name: v for v in config.voices}
    for supervision in list(supervisions)[:2]:
        custom = supervision.custom
        plan = UtterancePlan(
            utt_id=supervision.id,
            split="dev",
            index=0,
            text=supervision.text,
            voice=voices[supervision.speaker],
            speed=custom["speed"],
            pitch=custom["pitch"],
            snr_db=custom["snr_db"],
            noise_seed=0,
        )
        clean = synthesise_clean(plan, 16000)[0].astype(np.float64)
        stored = recordings[supervision.recording_id].load_audio()[0].astype(np.float64)
        assert stored.shape == clean.shape
        # The writer may scale the mixture down to avoid clipping; undo that gain.
        gain = float(np.dot(stored, clean) / np.dot(clean, clean))
        assert abs(measured_snr_db(gain * clean, stored) - custom["snr_db"]) < 0.5


def test_add_noise_hits_requested_snr():
    t = np.arange(16000) / 16000.0
    signal = 0.3 * np.sin(2 * np.pi * 220 * t)
    for snr in (10.0, 17.5, 30.0):
        noisy = add_noise(signal, snr, np.random.default_rng(3))
        assert abs(measured_snr_db(signal, noisy) - snr) < 0.5
    a = add_noise(signal, 20.0, np.random.default_rng(5))
    b = add_noise(signal, 20.0, np.random.default_rng(5))
    assert np.array_equal(a, b)


# --------------------------------------------------------------------------
# Engines and their failures


def test_missing_binary_names_it_and_the_packages(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="espeak-ng") as info:
        require_binary("espeak-ng")
    assert "apt-get install espeak-ng flite" in str(info.value)


@requires_tts
@pytest.mark.parametrize(
    "voice",
    [
        Voice("bad-espeak", "espeak-ng", "xx-no-such-voice"),
        Voice("bad-variant", "espeak-ng", "en-us+nosuchvariant"),
        Voice("bad-flite", "flite", "nosuchvoice"),
    ],
)
def test_unknown_voice_fails_early_naming_it(voice):
    with pytest.raises(ValueError, match=voice.name):
        check_voice(voice)


@requires_tts
def test_default_voices_are_available():
    config = default_corpus_config()
    for voice in list(config.voices) + [config.heldout_test_voice]:
        check_voice(voice)


def test_engine_failure_names_utterance_voice_and_stderr(monkeypatch, tmp_path):
    fake = tmp_path / "espeak-ng"
    fake.write_text("#!/bin/sh\necho 'synthesis exploded' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    plan = UtterancePlan("embedded-train-00007-spk", "train", 7, "HELLO THERE", Voice("spk", "espeak-ng", "en-us"),
                         1.0, 50, 20.0, 0)  # fmt: skip
    with pytest.raises(RuntimeError) as info:
        synthesise_clean(plan, 16000)
    message = str(info.value)
    assert "embedded-train-00007-spk" in message and "spk" in message and "synthesis exploded" in message


# --------------------------------------------------------------------------
# Checks for any corpus


@requires_tts
def test_recording_problem_names_truncated_corrupt_and_missing_files(corpus_dir, tmp_path):
    recordings, _ = load_split(corpus_dir, "test")
    good = recordings[0]
    source = Path(good.sources[0].source)

    def pointing_to(path: Path, rid: str):
        return replace(good, id=rid, sources=[AudioSource(type="file", channels=[0], source=str(path))])

    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(source.read_bytes()[:2000])
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    missing = tmp_path / "missing.wav"

    assert recording_problem(good) == ""
    expected = {
        "rec-truncated": (truncated, "manifest declares"),
        "rec-corrupt": (corrupt, "cannot be read"),
        "rec-missing": (missing, "file not found"),
    }
    for rid, (path, words) in expected.items():
        assert words in recording_problem(pointing_to(path, rid)), rid


def test_recording_problem_rejects_non_finite_audio(tmp_path):
    from lhotse import Recording

    path = tmp_path / "nan.wav"
    samples = np.zeros(1600, dtype=np.float32)
    samples[10] = np.nan
    sf.write(str(path), samples, 16000, subtype="FLOAT")
    assert "NaN" in recording_problem(Recording.from_file(path, recording_id="nan-rec"))


def test_supervision_problem_names_empty_transcripts():
    from lhotse import SupervisionSegment

    good = SupervisionSegment("ok", "r1", 0.0, 1.0, text="HELLO WORLD")
    empty = SupervisionSegment("empty-one", "r2", 0.0, 1.0, text="")
    symbols = SupervisionSegment("symbols-only", "r3", 0.0, 1.0, text="... ?!")
    assert supervision_problem(good) == ""
    assert "no words" in supervision_problem(empty) and "no words" in supervision_problem(symbols)


def test_every_supervision_carries_the_synthesisers_word_times(corpus_dir):
    engines = set()
    for split in ("train", "dev", "test"):
        recordings, supervisions = load_split(corpus_dir, split)
        for supervision in supervisions:
            words = supervision.alignment["word"]
            assert [w.symbol for w in words] == supervision.text.split(), supervision.id
            starts = [w.start for w in words]
            assert starts == sorted(starts) and all(w.duration > 0 for w in words), supervision.id
            assert words[-1].end <= recordings[supervision.recording_id].duration + 1e-6
            engines.add(supervision.custom["word_time_source"])
    assert engines == {"espeak-ng word events", "flite segment durations"}


def test_a_wav_without_its_word_times_is_rendered_again_identically(corpus_dir, tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(corpus_dir, copy)
    first = sorted((copy / "wav" / "dev").glob("*.words.json"))[0]
    wav = first.with_name(first.name.replace(".words.json", ".wav"))
    before = wav.read_bytes()
    first.unlink()
    prepare_embedded_corpus(tiny_config(), copy, num_jobs=1)
    assert first.is_file() and wav.read_bytes() == before
    assert manifest_lines(copy) == manifest_lines(corpus_dir)
