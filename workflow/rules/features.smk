# 80-dim log-mel filterbank features, computed and stored by lhotse.


rule compute_fbank:
    input:
        recordings=lambda w: manifest("recordings", w.split),
        supervisions=lambda w: manifest("supervisions", w.split),
    output:
        cuts=f"{DATA}/fbank/cuts_{{split}}.jsonl.gz",
    params:
        storage_dir=f"{DATA}/fbank",
        num_mel_bins=config["features"].get("num_mel_bins", 80),
        speed_perturb=lambda w: "--speed-perturb" if w.split == "train" and config["features"].get("speed_perturb", False) else "",
        on_the_fly="--on-the-fly" if config["features"].get("on_the_fly", False) else "",
    wildcard_constraints:
        split="|".join(SPLITS),
    threads: config["features"].get("num_jobs", 1)
    resources:
        **RESOURCES["features"],
    log:
        f"{DATA}/logs/compute_fbank_{{split}}.log",
    shell:
        "streamkd compute-fbank --recordings {input.recordings}"
        " --supervisions {input.supervisions} --cuts {output.cuts} --storage-dir {params.storage_dir}"
        " --num-mel-bins {params.num_mel_bins} --num-jobs {threads} {params.speed_perturb} {params.on_the_fly} > {log} 2>&1"


# The data check: cuts the models cannot use (unreadable audio, empty or out-of-alphabet
# transcripts, too short for the front-end or the transcript, too long to train on) are
# excluded and reported per split, or fail the run (see streamkd/data/check.py).
from streamkd.training.config import OptimisationConfig

DATA_CHECK = config.get("data_check", {})


def checked_cuts(split):
    return f"{DATA}/fbank/cuts_{split}.checked.jsonl.gz"


def split_kind(split):
    """A split that is decoded is checked as a test set, even when training validates on it."""
    if split == "train":
        return "train"
    return "test" if split in TEST_SETS else "dev"


def max_training_seconds():
    """The shorter of the two roles' limits, so that neither drops utterances unreported."""
    default = OptimisationConfig.max_utterance_seconds
    return min(config["training"][r].get("max_utterance_seconds", default) for r in ("teacher", "student"))


def length_bound():
    """The loss whose length bound applies: CTC's (the stricter) whenever a CTC head trains.
    Naming the bound, not the head, lets runs with ctc and transducer+ctc heads share data/."""
    return "transducer" if HEAD["type"] == "transducer" else "ctc"


def data_check_args(wildcards):
    args = ["--kind", split_kind(wildcards.split), "--head", length_bound(),
            "--max-excluded-fraction", DATA_CHECK.get("max_excluded_fraction", 0.02)]
    args += ["--max-utterance-seconds", max_training_seconds()]
    if DATA_CHECK.get("allow_test_exclusion", False):
        args.append("--allow-test-exclusion")
    return shell_args(args)


rule check_data:
    input:
        cuts=f"{DATA}/fbank/cuts_{{split}}.jsonl.gz",
        recordings=lambda w: manifest("recordings", w.split),
        supervisions=lambda w: manifest("supervisions", w.split),
        bpe=f"{DATA}/lang/bpe.model",
    output:
        cuts=checked_cuts("{split}"),
        report=f"{DATA}/fbank/check_{{split}}.json",
    params:
        args=data_check_args,
    wildcard_constraints:
        split="|".join(SPLITS),
    resources:
        **RESOURCES["default"],
    log:
        f"{DATA}/logs/check_data_{{split}}.log",
    shell:
        "streamkd check-data --cuts {input.cuts} --recordings {input.recordings}"
        " --supervisions {input.supervisions} --bpe-model {input.bpe} --split {wildcards.split}"
        " {params.args} --out-cuts {output.cuts} --report {output.report} > {log} 2>&1"
