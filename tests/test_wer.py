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


def test_record_keeps_every_method_and_its_decoding_facts(tmp_path):
    import json

    from click.testing import CliRunner

    from streamkd.cli import main

    summary = tmp_path / "train_summary.json"
    summary.write_text(
        json.dumps(
            {
                "role": "student",
                "method": "none",
                "chunk_size": 4,
                "left_chunks": -1,
                "seed": 1,
                "config_hash": "abc",
                "num_params": 10,
                "train_seconds": 1.0,
                "head": "transducer",
            }
        )
    )
    args = ["record", "--run", "none-chunk4-seed1", "--train-summary", str(summary), "--out", str(tmp_path / "r.json")]
    for method, wer, streaming in (("rnnt-greedy", 12.5, False), ("rnnt-greedy-streaming", 12.5, True)):
        (tmp_path / f"{method}.wer.json").write_text(json.dumps({"wer": wer}))
        (tmp_path / f"{method}.decode.json").write_text(
            json.dumps({"rtf": 0.1, "latency_ms": 190.0, "streaming": streaming, "chunk_size": 4})
        )
        args += [
            "--wer",
            f"test/{method}={tmp_path / f'{method}.wer.json'}",
            "--decode-stats",
            f"test/{method}={tmp_path / f'{method}.decode.json'}",
        ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["wer"] == {"test": {"rnnt-greedy": 12.5, "rnnt-greedy-streaming": 12.5}}
    assert record["decoding"]["test"]["rnnt-greedy-streaming"] == {
        "rtf": 0.1,
        "latency_ms": 190.0,
        "streaming": True,
        "chunk_size": 4,
    }
    assert record["head"] == "transducer"
    bad = CliRunner().invoke(main, args[:7] + ["--wer", "test=x.json"])
    assert bad.exit_code != 0 and "TEST_SET/METHOD=PATH" in bad.output
