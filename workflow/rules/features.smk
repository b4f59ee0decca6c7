# 80-dim log-mel filterbank features, computed and stored by lhotse.


rule compute_fbank:
    input:
        recordings=lambda w: manifest("recordings", w.split),
        supervisions=lambda w: manifest("supervisions", w.split),
    output:
        cuts=f"{DATA}/fbank/cuts_{{split}}.jsonl.gz",
    params:
        storage_dir=lambda w, output: parent_dir(output.cuts),
        num_mel_bins=config["features"]["num_mel_bins"],
        speed_perturb=speed_perturb_flag,
        on_the_fly="--on-the-fly" if config["features"]["on_the_fly"] else "",
    wildcard_constraints:
        split="|".join(SPLITS),
    threads: config["features"]["num_jobs"]
    resources:
        **RESOURCES["features"],
    log:
        f"{DATA}/logs/compute_fbank_{{split}}.log",
    benchmark:
        f"{DATA}/benchmarks/compute_fbank_{{split}}.tsv"
    conda:
        CONDA_ENV
    shell:
        "streamkd compute-fbank --recordings {input.recordings}"
        " --supervisions {input.supervisions} --cuts {output.cuts} --storage-dir {params.storage_dir}"
        " --num-mel-bins {params.num_mel_bins} --num-jobs {threads} {params.speed_perturb} {params.on_the_fly} > {log} 2>&1"


# The data check: cuts the models cannot use (unreadable audio, empty or out-of-alphabet
# transcripts, too short for the front-end or the transcript, too long to train on) are
# excluded and reported per split, or fail the run (see streamkd/data/check.py).
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
        args=check_data_args,
    wildcard_constraints:
        split="|".join(SPLITS),
    resources:
        **RESOURCES["default"],
    log:
        f"{DATA}/logs/check_data_{{split}}.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd check-data --cuts {input.cuts} --recordings {input.recordings}"
        " --supervisions {input.supervisions} --bpe-model {input.bpe} --split {wildcards.split}"
        " {params.args} --out-cuts {output.cuts} --report {output.report} > {log} 2>&1"
