"""`streamkd decode` end to end on saved tiny models: every method, streaming vs simulated."""

import json

import pytest
import torch
from click.testing import CliRunner
from lhotse import load_manifest

from streamkd.cli import main
from streamkd.config import ConfigError, check_decoding_methods
from streamkd.decode.ctc import build_ctc_topo, save_graph
from streamkd.decode.methods import METHOD_NAMES, methods_for, parse_method
from streamkd.decode.run import decode_cuts
from streamkd.model import HeadConfig, build_asr_model
from streamkd.model.checkpoint import load_model, save_model

from helpers import train_tiny_bpe, write_feature_cuts

FEAT_DIM = 80
TINY = dict(
    feat_dim=FEAT_DIM,
    d_model=16,
    num_layers=2,
    num_heads=2,
    ff_dim=32,
    conv_kernel=3,
    dropout=0.0,
    subsampling_channels=4,
)
TEXTS = ["THE CAT SAT", "A DOG", "ON THE MAT THE CAT", "DOG"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A BPE model, a CTC topology, test cuts of different lengths, and two saved students."""
    d = tmp_path_factory.mktemp("decode")
    bpe = train_tiny_bpe(d, TEXTS * 10, vocab_size=24)
    from streamkd.data.tokenizer import Tokenizer

    vocab = Tokenizer(bpe).vocab_size
    save_graph(build_ctc_topo(vocab), d / "ctc_topo.pt")
    torch.manual_seed(0)
    cuts = write_feature_cuts(d, [torch.randn(n, FEAT_DIM) for n in (83, 150, 61, 117)], TEXTS)
    models = {}
    for head in ("ctc", "transducer+ctc"):
        torch.manual_seed(1)
        model = build_asr_model(dict(TINY, causal=True, chunk_size=3, left_chunks=1), vocab, {"type": head})
        with torch.no_grad():  # a random model: make it emit tokens rather than only blanks
            if model.ctc is not None:
                model.ctc.proj.bias[0] = -2.0
            if model.transducer is not None:
                model.transducer.joiner.output.bias[0] = -1.0
        path = d / f"{head}.pt"
        save_model(path, model, meta={"role": "student"})
        models[head] = path
    return d, bpe, cuts, models


def read_hyps(path):
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize("method", ["ctc-1best", "rnnt-greedy", "rnnt-modified-beam", "rnnt-fast-beam"])
def test_streaming_decoding_gives_the_simulated_hypotheses(setup, method):
    d, bpe, cuts, models = setup
    head = "ctc" if method.startswith("ctc") else "transducer+ctc"
    graph = d / "ctc_topo.pt" if method.startswith("ctc") else None
    results = {}
    for suffix in ("", "-streaming"):
        hyps = d / f"{method}{suffix}.jsonl"
        stats = decode_cuts(
            models[head],
            cuts,
            bpe,
            hyps,
            method=method + suffix,
            graph_path=graph,
            stats_path=d / f"{method}{suffix}.json",
            max_duration=2.0,
        )
        results[suffix] = read_hyps(hyps)
        assert stats["streaming"] == bool(suffix)
        assert stats["latency_ms"] == 3 * 40 + 30 and stats["chunk_size"] == 3
        assert stats["rtf"] > 0 and stats["num_utterances"] == 4
        assert json.loads((d / f"{method}{suffix}.json").read_text())["method"] == method + suffix
    assert results[""] == results["-streaming"]
    assert set(results[""]) == {f"cuts-{i:03d}" for i in range(4)}
    assert any(row["hyp"] for row in results[""].values()), "the test model should emit something"


def test_the_decode_command_checks_method_against_head_and_graph(setup):
    d, bpe, cuts, models = setup
    runner = CliRunner()
    base = [
        "decode",
        "--checkpoint",
        str(models["ctc"]),
        "--cuts",
        str(cuts),
        "--bpe-model",
        str(bpe),
        "--hyps",
        str(d / "x.jsonl"),
    ]
    result = runner.invoke(main, base + ["--method", "rnnt-greedy"])
    assert result.exit_code == 1 and "error: " in result.output and "needs a transducer head" in result.output
    result = runner.invoke(main, base + ["--method", "ctc-1best"])
    assert result.exit_code == 1 and "needs --graph" in result.output
    result = runner.invoke(main, base + ["--method", "ctc-beam"])
    assert result.exit_code != 0 and "ctc-beam" in result.output
    result = runner.invoke(
        main, base + ["--method", "ctc-1best", "--graph", str(d / "ctc_topo.pt"), "--stats", str(d / "x.json")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((d / "x.json").read_text())["method"] == "ctc-1best"


def test_checkpoint_round_trip_keeps_the_head(setup, tmp_path):
    _, _, _, models = setup
    model, meta = load_model(models["transducer+ctc"])
    assert model.head.type == "transducer+ctc" and model.ctc is not None and model.transducer is not None
    # Checkpoints written before heads existed have no "head" entry: they are CTC models.
    payload = torch.load(models["ctc"], weights_only=False)
    del payload["model_config"]["head"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    assert load_model(old)[0].head == HeadConfig()


def test_method_names_and_head_checks():
    assert parse_method("rnnt-modified-beam-streaming").streaming
    assert parse_method("ctc-hlg").graph == "hlg" and parse_method("rnnt-greedy").graph is None
    with pytest.raises(ValueError, match="valid methods"):
        parse_method("beam")
    both = HeadConfig(type="transducer+ctc")
    assert [m.name for m in methods_for(both, METHOD_NAMES, streaming_model=False)] == [
        n for n in METHOD_NAMES if not n.endswith("-streaming")
    ]
    assert [m.name for m in methods_for(HeadConfig(), ["ctc-1best", "ctc-hlg-streaming"], True)] == [
        "ctc-1best",
        "ctc-hlg-streaming",
    ]
    config = {"model": {"head": {"type": "ctc"}}, "decoding": {"methods": ["ctc-1best", "rnnt-greedy"]}}
    with pytest.raises(ConfigError, match="'rnnt-greedy' needs a transducer head"):
        check_decoding_methods(config)


def test_check_streaming_command_reports_agreement(setup):
    _, _, cuts, models = setup
    result = CliRunner(mix_stderr=False).invoke(
        main, ["check-streaming", "--checkpoint", str(models["ctc"]), "--cuts", str(cuts)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["utterances"] == 4 and report["max_abs_diff"] < 1e-4 and report["chunk_size"] == 3


def test_compare_hyps_counts_identical_utterances_and_refuses_different_sets(tmp_path):
    def write(name, hyps):
        path = tmp_path / name
        path.write_text("".join(json.dumps({"id": i, "ref": "A B", "hyp": h}) + "\n" for i, h in hyps.items()))
        return str(path)

    streamed = write("streamed.jsonl", {"u1": "A B", "u2": "A", "u3": ""})
    simulated = write("simulated.jsonl", {"u1": "A B", "u2": "A C", "u3": ""})
    result = CliRunner(mix_stderr=False).invoke(main, ["compare-hyps", streamed, simulated])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"utterances": 3, "identical": 2, "differing_ids": ["u2"]}
    fewer = write("fewer.jsonl", {"u1": "A B", "u2": "A"})
    result = CliRunner(mix_stderr=False).invoke(main, ["compare-hyps", streamed, fewer])
    assert result.exit_code == 1 and "only in the first: ['u3']" in result.stderr


def test_the_emission_delay_command_times_a_streaming_decode_against_the_reference(setup):
    d, bpe, cuts, models = setup
    runner = CliRunner()
    common = ["--checkpoint", str(models["ctc"]), "--cuts", str(cuts), "--bpe-model", str(bpe)]
    result = runner.invoke(main, ["align-reference", *common, "--out", str(d / "times.jsonl")])
    assert result.exit_code == 0, result.output
    emissions, summary = d / "emissions.jsonl", d / "delay.json"
    result = runner.invoke(
        main,
        ["emission-delay", *common, "--teacher-alignment", str(d / "times.jsonl"), "--method", "ctc-1best-streaming"]
        + ["--graph", str(d / "ctc_topo.pt"), "--emissions", str(emissions), "--summary", str(summary)]
        + ["--search-beam", "10", "--output-beam", "4"],
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(summary.read_text())
    assert stats["method"] == "ctc-1best-streaming" and stats["mode"] == "streaming" and stats["chunk_size"] == 3
    assert stats["num_utterances"] == 4
    # These cuts carry no word alignments: the reference is the teacher's (here: the model's own).
    assert stats["reference"] == "teacher forced alignment"
    rows = read_hyps(emissions)
    assert set(rows) == {f"cuts-{i:03d}" for i in range(4)}
    assert sum(len(row["words"]) for row in rows.values()) == stats["num_hypothesis"] > 0
    # Every token is emitted when the last fbank window of its chunk (3 frames of 40 ms, read
    # up to 30 ms ahead) ends, 7.5 ms after that frame's shift, or when the audio ends.
    durations = {c.id: c.duration * 1000 for c in load_manifest(cuts)}
    for row in rows.values():
        assert all((t - 37.5) % 120 == 0 or t == durations[row["id"]] for t in row["emission_ms"])


def test_greedy_streaming_is_timed_and_a_word_graph_search_is_refused_with_its_reason(setup):
    d, bpe, cuts, models = setup
    runner = CliRunner()
    common = ["--checkpoint", str(models["ctc"]), "--cuts", str(cuts), "--bpe-model", str(bpe)]
    result = runner.invoke(main, ["align-reference", *common, "--out", str(d / "times.jsonl")])
    assert result.exit_code == 0, result.output
    out = ["--teacher-alignment", str(d / "times.jsonl"), "--emissions", str(d / "g.jsonl"), "--summary"]
    result = runner.invoke(
        main, ["emission-delay", *common, *out, str(d / "g.json"), "--method", "ctc-greedy-streaming"]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads((d / "g.json").read_text())
    assert stats["method"] == "ctc-greedy-streaming" and stats["mode"] == "streaming"
    assert stats["num_utterances"] == 4 and stats["num_reference"] > 0
    # A word-graph search shows words, not tokens, as partial results: no emission times.
    from types import SimpleNamespace

    from streamkd.decode.emission import _incremental_decoder

    with pytest.raises(ValueError, match="ctc-hlg-streaming' searches a word graph"):
        _incremental_decoder(SimpleNamespace(method=parse_method("ctc-hlg-streaming")), None)
