"""Word times from the synthesisers: they describe the stored audio, and they move with it."""

import subprocess

import numpy as np
import pytest
import soundfile as sf

from streamkd.data.embedded import word_alignment
from streamkd.data.word_times import espeak_times_for, espeak_word_times, flite_times_for, flite_word_times, parse_psdur
from tests.helpers import HAVE_TTS

requires_tts = pytest.mark.skipif(not HAVE_TTS, reason="needs espeak-ng and flite")

TEXT = "the quiet river carried seven boats downstream."


def espeak_cli(tmp_path, text, word_gap=0, voice="en-us", wpm=175, pitch=50):
    wav = tmp_path / f"espeak-{word_gap}.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-g", str(word_gap), "-w", str(wav), text],
        check=True,
    )
    pcm, rate = sf.read(str(wav), dtype="int16")
    return pcm, rate


def frame_energy_db(samples, rate, start, end):
    """Mean power in dB of ``samples`` between ``start`` and ``end`` seconds."""
    piece = samples[int(start * rate) : int(end * rate)].astype(np.float64) / 32768.0
    return 10.0 * np.log10(np.mean(piece**2) + 1e-12)


@requires_tts
def test_inserted_silence_moves_every_later_word_by_its_length_and_is_silent(tmp_path):
    gap_s = 0.5  # espeak-ng -g 50: 500 ms of silence before every word but the first
    plain_pcm, rate = espeak_cli(tmp_path, TEXT)
    gapped_pcm, _ = espeak_cli(tmp_path, TEXT, word_gap=50)
    plain = espeak_times_for("en-us", 175, 50, TEXT, plain_pcm, rate)
    gapped = espeak_times_for("en-us", 175, 50, TEXT, gapped_pcm, rate, word_gap=50)
    assert plain is not None and gapped is not None and len(plain) == len(gapped) == 7
    for k in range(1, len(plain)):
        # Each word moves by one more gap than the word before it: 500 ms asked for, which
        # espeak-ng renders as 500-530 ms, plus the lengthening of a word before a pause.
        extra = (gapped[k][0] - gapped[k - 1][0]) - (plain[k][0] - plain[k - 1][0])
        assert gap_s - 0.01 <= extra <= gap_s + 0.1, (k, extra)
    for (_, end), (start, _) in zip(gapped, gapped[1:]):
        # Between two words of the gapped audio lies the inserted silence, and nothing else;
        # a word ends with sound, and the next one has sound soon after it starts (a stop
        # consonant begins with its closure).
        assert start - end >= gap_s - 0.02
        assert frame_energy_db(gapped_pcm, rate, end + 0.01, start - 0.01) < -80
        assert frame_energy_db(gapped_pcm, rate, end - 0.03, end) > -50
        assert frame_energy_db(gapped_pcm, rate, start, start + 0.08) > -50
    for start, end in gapped:
        assert frame_energy_db(gapped_pcm, rate, start, end) > -40  # speech inside every word


@requires_tts
def test_espeak_times_refuse_audio_they_do_not_describe(tmp_path):
    pcm, rate = espeak_cli(tmp_path, TEXT)
    with pytest.raises(ValueError, match="differently from the espeak-ng command line"):
        espeak_times_for("en-us", 200, 50, TEXT, pcm, rate)  # another speed: other audio


@requires_tts
def test_flite_words_cover_their_phones_and_speech(tmp_path):
    wav = tmp_path / "flite.wav"
    done = subprocess.run(
        ["flite", "-voice", "slt", "-psdur", "-t", TEXT, "-o", str(wav)], capture_output=True, text=True, check=True
    )
    times = flite_times_for("slt", TEXT, done.stdout)
    pcm, rate = sf.read(str(wav), dtype="int16")
    assert times is not None and len(times) == 7
    assert times[0][0] == pytest.approx(parse_psdur(done.stdout)[0][1])  # after the leading pause
    assert all(a[1] <= b[0] + 1e-9 for a, b in zip(times, times[1:]))
    assert times[-1][1] <= len(pcm) / rate
    for start, end in times:
        assert frame_energy_db(pcm, rate, start, end) > -40


def test_word_events_map_to_words_and_end_at_pauses():
    text = "a bb ccc."
    # (type, 1-based text position, length, sample, phoneme): word events at 1, 3 and 6.
    events = [(1, 1, 1, 0, b""), (7, 1, 0, 10, b"a"), (1, 3, 2, 100, b""), (7, 3, 0, 110, b"b")]
    events += [(7, 5, 0, 180, b"_:"), (1, 6, 3, 400, b""), (7, 6, 0, 410, b"k"), (7, 9, 0, 600, b"_")]
    events += [(5, 9, 0, 650, b"")]
    assert espeak_word_times(text, events, 100) == [(0.0, 1.0), (1.0, 1.8), (4.0, 6.0)]
    assert espeak_word_times(text, [], 100) is None


def test_words_read_as_one_share_their_span_by_letters():
    text = "from the cradle."  # espeak-ng reads "from the" as one word: no event for "the"
    events = [(1, 1, 4, 0, b""), (7, 1, 0, 10, b"f"), (1, 10, 6, 700, b""), (7, 16, 0, 1400, b"_:")]
    times = espeak_word_times(text, events, 1000)
    assert np.allclose(times, [(0.0, 0.4), (0.4, 0.7), (0.7, 1.4)])


def test_flite_times_refuse_phones_that_do_not_add_up():
    segments = [("pau", 0.1), ("k", 0.2), ("ae", 0.3), ("t", 0.4), ("pau", 0.5), ("s", 0.6), ("ae", 0.7)]
    assert flite_word_times("cat sa", segments, [3, 2]) == [(0.1, 0.4), (0.5, 0.7)]
    assert flite_word_times("cat sa", segments, [3, 3]) is None


def test_word_alignment_names_transcript_words_and_rejects_a_count_mismatch():
    alignment = word_alignment("HELLO THERE", [(0.1, 0.4), (0.5, 1.2)], duration=1.0)
    items = alignment["word"]
    assert [i.symbol for i in items] == ["HELLO", "THERE"]
    assert items[1].start == 0.5 and items[1].end == pytest.approx(1.0)  # clipped to the recording
    assert word_alignment("HELLO", None, 1.0) is None
    with pytest.raises(ValueError, match="2 words"):
        word_alignment("HELLO THERE", [(0.1, 0.4)], 1.0)


def test_compare_references_reports_how_far_teacher_word_ends_lie_from_the_alignment(tmp_path):
    import json

    from click.testing import CliRunner
    from lhotse import CutSet, MonoCut, SupervisionSegment
    from lhotse.supervision import AlignmentItem

    from streamkd.cli import main

    words = [AlignmentItem("HELLO", 0.1, 0.3), AlignmentItem("THERE", 0.5, 0.4)]  # ends 400 and 900 ms
    sup = SupervisionSegment("u", "u", 0.0, 1.0, text="HELLO THERE", alignment={"word": words})
    CutSet.from_cuts([MonoCut("u", 0.0, 1.0, 0, supervisions=[sup])]).to_file(tmp_path / "cuts.jsonl.gz")
    teacher = {"id": "u", "tokens": [5, 6], "words": [{"word": "HELLO", "start_ms": 320.0, "end_ms": 440.0}]}
    teacher["words"].append({"word": "THERE", "start_ms": 760.0, "end_ms": 840.0})
    (tmp_path / "align.jsonl").write_text(json.dumps(teacher) + "\n")
    result = CliRunner().invoke(
        main,
        [
            "compare-references",
            "--cuts",
            str(tmp_path / "cuts.jsonl.gz"),
            "--teacher-alignment",
            str(tmp_path / "align.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["num_words"] == 2
    assert summary["median_abs_diff_ms"] == pytest.approx(50.0)  # |440 - 400| and |840 - 900|
    assert summary["mean_diff_ms"] == pytest.approx(-10.0)
