"""Exported streaming students (ONNX, TorchScript) and `streamkd transcribe` on audio files."""

import json

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from streamkd.cli import main
from streamkd.deploy.audio import SAMPLE_RATE, fbank, load_audio
from streamkd.deploy.chunk_encoder import ChunkEncoder
from streamkd.deploy.export import export_model_dir
from streamkd.deploy.onnx_model import OnnxModel
from streamkd.lang.hlg import compile_hlg
from streamkd.lang.ngram import train_ngram_lm
from streamkd.model import StreamingEncoder, build_asr_model
from streamkd.model.checkpoint import save_model

from helpers import train_tiny_bpe

TINY = dict(
    feat_dim=80, d_model=16, num_layers=2, num_heads=2, ff_dim=32, conv_kernel=3, dropout=0.0, subsampling_channels=4
)
SENTENCES = ["THE CAT SAT", "A DOG", "ON THE MAT THE CAT", "DOG", "THE DOG SAT ON THE CAT"]


def tiny_student(vocab: int, head: str, left_chunks: int, seed: int = 1):
    torch.manual_seed(seed)
    model = build_asr_model(dict(TINY, causal=True, chunk_size=3, left_chunks=left_chunks), vocab, {"type": head})
    with torch.no_grad():  # a random model: make it emit tokens rather than only blanks
        if model.ctc is not None:
            model.ctc.proj.bias[0] = -2.0
        if model.transducer is not None:
            model.transducer.joiner.output.bias[0] = -1.0
    return model.eval()


def signal(seconds: float, seed: int, rate: int = SAMPLE_RATE, noise: float = 0.05) -> np.ndarray:
    """A few tones plus noise: varied enough that a random model emits varied tokens."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tones = sum(np.sin(2 * np.pi * f * t) * rng.uniform(0.1, 0.3) for f in rng.uniform(100, 3000, size=4))
    return (0.3 * tones + noise * rng.standard_normal(t.size)).astype(np.float32) * np.hanning(t.size).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A BPE model, an HLG, audio files, and two students exported to model folders."""
    d = tmp_path_factory.mktemp("deploy")
    bpe = train_tiny_bpe(d, SENTENCES * 10, vocab_size=24)
    train_ngram_lm(SENTENCES, d / "lm.arpa", order=2)
    compile_hlg(bpe, d / "lm.arpa", order=2).save(d / "HLG.pt")
    from streamkd.data.tokenizer import Tokenizer

    vocab = Tokenizer(bpe).vocab_size
    audio = d / "audio"
    audio.mkdir()
    for i, seconds in enumerate((1.3, 2.1, 0.9, 1.7)):
        sf.write(audio / f"utt{i}.wav", signal(seconds, seed=i), SAMPLE_RATE)
    models = {}
    for name, head, left in (("both", "transducer+ctc", 1), ("ctc_all_left", "ctc", -1)):
        checkpoint = d / f"{name}.pt"
        save_model(checkpoint, tiny_student(vocab, head, left), meta={"role": "student"})
        export_model_dir(checkpoint, bpe, d / name, hlg=d / "HLG.pt")
        models[name] = d / name
    return d, audio, models


def pytorch_stream(model, feats):
    stream = StreamingEncoder(model.encoder)
    state = stream.init_state(1)
    out, lens = stream.accept(state, feats.unsqueeze(0), ended=True)
    return out[0, : int(lens[0])]


def torchscript_stream(path, chunk: ChunkEncoder, feats):
    """Drive the TorchScript encoder as a runtime would: T frames per call, shift by decode_chunk_len."""
    scripted = torch.jit.load(str(path))
    states, outputs = chunk.initial_states(1), []
    for start in range(0, feats.size(0), chunk.shift_frames):
        x = feats[start : start + chunk.input_frames]
        if x.size(0) < 7:
            break
        real = x.size(0)
        x = torch.nn.functional.pad(x, (0, 0, 0, chunk.input_frames - real))
        result = scripted(x.unsqueeze(0), torch.tensor([real]), *states)
        outputs.append(result[0][0, : int(result[1][0])])
        states = result[2:6]
        if start + chunk.input_frames >= feats.size(0):
            break
    return torch.cat(outputs)


@pytest.mark.parametrize("name", ["both", "ctc_all_left"])
def test_exported_encoders_reproduce_pytorch_streaming(exported, name):
    _, audio, models = exported
    from streamkd.model.checkpoint import load_model

    model = load_model(models[name] / "model.pt")[0].eval()
    chunk = ChunkEncoder(model)
    onnx_model = OnnxModel(models[name])
    for wav in sorted(audio.glob("*.wav")):
        feats = fbank(load_audio(wav))
        with torch.no_grad():
            expected = pytorch_stream(model, feats)
            scripted = torchscript_stream(models[name] / "encoder.torchscript.pt", chunk, feats)
        stream = onnx_model.new_stream()
        # Uneven pieces, as a microphone would deliver them.
        results = stream.accept(feats[:37].numpy()) + stream.accept(feats[37:].numpy(), ended=True)
        from_onnx = np.concatenate([r["encoder_out"][0, : int(r["encoder_out_lens"][0])] for r in results])
        assert expected.size(0) == feats.size(0) // 4 - 1 and from_onnx.shape == tuple(expected.shape)
        np.testing.assert_allclose(from_onnx, expected.numpy(), atol=1e-4, rtol=0)
        torch.testing.assert_close(scripted, expected, atol=1e-4, rtol=0)


def test_exported_metadata_lets_a_runtime_drive_the_encoder(exported):
    _, _, models = exported
    meta = {p.key: p.value for p in onnx.load(str(models["both"] / "encoder.onnx")).metadata_props}
    assert meta["chunk_size"] == "3" and meta["T"] == "15" and meta["decode_chunk_len"] == "12"
    assert meta["left_context"] == "3" and meta["vocab_size"] == "24" and meta["feature_dim"] == "80"
    assert float(meta["algorithmic_latency_ms"]) == 3 * 40 + 30
    extra = {"metadata.json": ""}
    torch.jit.load(str(models["both"] / "encoder.torchscript.pt"), _extra_files=extra)
    assert json.loads(extra["metadata.json"]) == meta
    unlimited = {p.key: p.value for p in onnx.load(str(models["ctc_all_left"] / "encoder.onnx")).metadata_props}
    assert unlimited["left_context"] == "-1" and unlimited["head"] == "ctc"
    files = json.loads((models["both"] / "export.json").read_text())["files"]
    assert {"decoder.onnx", "joiner.onnx", "HLG.pt", "ctc_topo.pt", "bpe.model"} <= set(files)


def transcribe(*args):
    result = CliRunner(mix_stderr=False).invoke(main, ["transcribe", *map(str, args)])
    lines = dict(line.split("\t", 1) if "\t" in line else (line, "") for line in result.stdout.splitlines())
    return result, lines


@pytest.mark.parametrize("method", ["ctc-1best", "ctc-hlg", "rnnt-greedy", "rnnt-modified-beam", "ctc-1best-streaming"])
def test_transcribe_with_onnx_gives_the_pytorch_hypotheses(exported, method):
    _, audio, models = exported
    torch_run, torch_lines = transcribe(audio, "--model-dir", models["both"], "--method", method)
    onnx_run, onnx_lines = transcribe(audio, "--model-dir", models["both"], "--method", method, "--onnx")
    assert torch_run.exit_code == 0, torch_run.output
    assert onnx_run.exit_code == 0, onnx_run.stderr
    assert sorted(torch_lines) == [str(audio / f"utt{i}.wav") for i in range(4)]
    assert onnx_lines == torch_lines
    assert any(torch_lines.values()), "the test model should emit something"


@pytest.mark.parametrize("backend", [[], ["--onnx"]])
def test_stream_prints_partials_and_latency(exported, backend):
    _, audio, models = exported
    run, lines = transcribe(
        audio / "utt1.wav", "--model-dir", models["both"], "--method", "rnnt-greedy", "--stream", *backend
    )
    assert run.exit_code == 0, run.stderr
    whole, _ = transcribe(audio / "utt1.wav", "--model-dir", models["both"], "--method", "rnnt-greedy")
    final = lines[str(audio / "utt1.wav")]
    assert final == whole.stdout.split("\t", 1)[1].strip()
    partials = [line for line in run.stderr.splitlines() if " s] " in line]
    assert final and partials and partials[-1].endswith(final)
    latency = [line for line in run.stderr.splitlines() if "chunk-to-result latency" in line]
    assert len(latency) == 1 and "algorithmic latency 150 ms" in latency[0]
    # 2.1 s of audio in chunks of 120 ms: every chunk is reported.
    assert "over 17 chunks" in latency[0]


def test_an_unreadable_file_is_named_and_the_others_still_decode(exported, tmp_path):
    _, audio, models = exported
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    missing = tmp_path / "missing.flac"
    run, lines = transcribe(
        audio / "utt0.wav",
        broken,
        missing,
        audio / "utt2.wav",
        "--model-dir",
        models["ctc_all_left"],
        "--results",
        tmp_path / "results.jsonl",
    )
    assert run.exit_code == 1
    assert set(lines) == {str(audio / "utt0.wav"), str(audio / "utt2.wav")}
    assert f"error: {broken}: cannot read audio" in run.stderr and f"error: {missing}: no such file" in run.stderr
    assert "2 of 4 files could not be transcribed" in run.stderr
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["text"] is None for r in rows] == [False, True, True, False]
    assert rows[0]["rtf"] > 0 and "cannot read audio" in rows[1]["error"]


def test_stereo_and_other_sample_rates_are_mixed_down_and_resampled(exported, tmp_path):
    _, _, models = exported
    mono = signal(1.5, seed=7)
    sf.write(tmp_path / "mono.wav", mono, SAMPLE_RATE)
    sf.write(tmp_path / "stereo.flac", np.stack([mono, mono], axis=1), SAMPLE_RATE)
    sf.write(tmp_path / "second_channel.wav", np.stack([signal(1.5, seed=8), mono], axis=1), SAMPLE_RATE)
    np.testing.assert_allclose(load_audio(tmp_path / "stereo.flac"), mono, atol=1e-4)
    np.testing.assert_array_equal(
        load_audio(tmp_path / "second_channel.wav", channel=1), load_audio(tmp_path / "mono.wav")
    )
    with pytest.raises(Exception, match="channel 2 was asked for"):
        load_audio(tmp_path / "second_channel.wav", channel=2)

    from lhotse.augmentation.resample import resample

    # Tones below 3 kHz survive both resamplings; white noise near 8 kHz would not.
    tones = signal(1.5, seed=7, noise=0.0)
    upsampled = resample(torch.from_numpy(tones), SAMPLE_RATE, 44100).numpy()
    sf.write(tmp_path / "cd_rate.wav", upsampled, 44100)
    back = load_audio(tmp_path / "cd_rate.wav")
    assert abs(back.size - tones.size) <= 2
    n = min(back.size, tones.size)
    assert np.abs(back[:n] - tones[:n]).mean() < 0.01 * np.abs(tones).mean()
    sf.write(tmp_path / "cd_rate.wav", resample(torch.from_numpy(mono), SAMPLE_RATE, 44100).numpy(), 44100)

    run, lines = transcribe(
        tmp_path / "mono.wav",
        tmp_path / "stereo.flac",
        tmp_path / "cd_rate.wav",
        "--model-dir",
        models["both"],
        "--method",
        "rnnt-greedy",
    )
    assert run.exit_code == 0, run.stderr
    assert lines[str(tmp_path / "stereo.flac")] == lines[str(tmp_path / "mono.wav")]
    run, chosen = transcribe(
        tmp_path / "second_channel.wav", "--channel", "1", "--model-dir", models["both"], "--method", "rnnt-greedy"
    )
    assert chosen[str(tmp_path / "second_channel.wav")] == lines[str(tmp_path / "mono.wav")]


# -- the deploy path through the command line ----------------------------------------------------


def cli(*args):
    result = CliRunner(mix_stderr=False).invoke(main, [*map(str, args)])
    assert result.exit_code == 0, (result.stderr or "") + repr(result.exception)
    return result


@pytest.mark.parametrize(
    "options, present, absent",
    [
        (["--chunk-size", "2", "--left-chunks", "3", "--no-torchscript"], ["encoder.onnx"], ["encoder.torchscript.pt"]),
        (["--no-onnx"], ["encoder.torchscript.pt"], ["encoder.onnx", "decoder.onnx", "joiner.onnx"]),
    ],
    ids=["chunk-left-onnx-only", "torchscript-only"],
)
def test_export_command_writes_what_its_options_ask_for(exported, tmp_path, options, present, absent):
    d, _, models = exported
    out = tmp_path / "model"
    cli("export", "--checkpoint", d / "both.pt", "--bpe-model", d / "bpe.model", "--out-dir", out, *options)
    summary = json.loads((out / "export.json").read_text())
    for name in present:
        assert name in summary["files"] and (out / name).is_file()
    for name in absent:
        assert name not in summary["files"] and not (out / name).exists()
    meta = summary["metadata"]
    if "--chunk-size" in options:
        assert (meta["chunk_size"], meta["left_chunks"]) == ("2", "3")
        model = onnx.load(str(out / "encoder.onnx"))
        assert {p.key: p.value for p in model.metadata_props}["chunk_size"] == "2"
    else:  # the model's own: chunk 3, one chunk of left context
        assert (meta["chunk_size"], meta["left_chunks"]) == ("3", "1")


def _cuts_of_audio(d, audio, on_the_fly: bool):
    """The audio folder as a lhotse cut manifest: fbank computed when read, or stored with lilcom."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    from streamkd.data.features import compute_fbank

    recordings = [Recording.from_file(p, recording_id=p.stem) for p in sorted(audio.glob("*.wav"))]
    supervisions = [
        SupervisionSegment(id=r.id, recording_id=r.id, start=0.0, duration=r.duration, text="THE CAT")
        for r in recordings
    ]
    RecordingSet.from_recordings(recordings).to_file(d / "rec.jsonl.gz")
    SupervisionSet.from_segments(supervisions).to_file(d / "sup.jsonl.gz")
    cuts = d / ("cuts_float.jsonl.gz" if on_the_fly else "cuts_lilcom.jsonl.gz")
    compute_fbank(d / "rec.jsonl.gz", d / "sup.jsonl.gz", cuts, d / "fbank", on_the_fly=on_the_fly)
    return cuts


@pytest.mark.parametrize("method", ["ctc-1best-streaming", "rnnt-greedy-streaming"])
def test_transcribe_agrees_with_decode_on_the_same_audio(exported, tmp_path, method):
    """Same float features: every hypothesis equal. Lilcom-stored features (what the pipeline
    decodes) differ from float ones by the quantisation, which may flip a token or two."""
    d, audio, models = exported
    _, transcribed = transcribe(audio, "--model-dir", models["both"], "--method", method)
    graph = ["--graph", models["both"] / "ctc_topo.pt"] if method.startswith("ctc") else []
    decoded = {}
    for on_the_fly in (True, False):
        cuts = _cuts_of_audio(tmp_path, audio, on_the_fly)
        hyps = tmp_path / f"hyps-{on_the_fly}.jsonl"
        cli(
            "decode",
            "--checkpoint",
            models["both"] / "model.pt",
            "--cuts",
            cuts,
            "--bpe-model",
            d / "bpe.model",
            "--method",
            method,
            "--hyps",
            hyps,
            *graph,
        )
        decoded[on_the_fly] = {r["id"]: r["hyp"] for r in map(json.loads, hyps.read_text().splitlines())}
    by_id = {p.split("/")[-1].removesuffix(".wav"): text for p, text in transcribed.items()}
    assert any(by_id.values()), "the test model should emit something"
    assert decoded[True] == by_id
    differing = sum(decoded[False][k] != by_id[k] for k in by_id)
    assert differing <= 1, (decoded[False], by_id)


def test_deploy_fbank_matches_the_features_the_pipeline_trains_on(exported, tmp_path):
    """transcribe's fbank (float, from the audio file) against compute-fbank's stored features
    (lilcom) of the same files: same frame count, and equal within lilcom's quantisation."""
    from lhotse import load_manifest

    _, audio, _ = exported
    cuts = load_manifest(_cuts_of_audio(tmp_path, audio, on_the_fly=False))
    assert len(cuts) == 4
    for cut in cuts:
        stored = torch.from_numpy(cut.load_features())
        deployed = fbank(load_audio(audio / f"{cut.recording_id}.wav"))
        assert deployed.shape == stored.shape
        difference = (deployed - stored).abs()
        # lilcom stores these log-mel energies in steps of 2**-6: half a step on average, one at most.
        assert float(difference.max()) <= 2**-6 + 1e-5, float(difference.max())
        assert float(difference.mean()) < 0.6 * 2**-6, float(difference.mean())
