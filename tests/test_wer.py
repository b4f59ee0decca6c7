import pytest

from streamkd.results.wer import per_utterance_rows, score


def test_known_pairs():
    summary = score(
        [
            ("u1", "THE CAT SAT ON THE MAT", "THE CAT SAT ON THE MAT"),
            ("u2", "A B C D", "A X D"),  # one substitution, one deletion
            ("u3", "HELLO", "HELLO THERE WORLD"),  # two insertions
        ]
    )
    assert (summary.subs, summary.dels, summary.ins) == (1, 1, 2)
    assert summary.ref_words == 11
    assert summary.wer == pytest.approx(100 * 4 / 11)
    rows = {r["utt_id"]: r for r in per_utterance_rows(summary)}
    assert rows["u1"]["errors"] == 0
    assert rows["u2"]["alignment"] == "A (B->X) (C->*) D"
    assert rows["u3"]["ins"] == 2


def test_empty_hypothesis_is_all_deletions():
    summary = score([("u", "ONE TWO THREE", "")])
    assert summary.dels == 3 and summary.wer == pytest.approx(100.0)


def test_wer_undefined_without_reference_words():
    with pytest.raises(ValueError, match="no words"):
        score([("u", "", "SOMETHING")]).wer
