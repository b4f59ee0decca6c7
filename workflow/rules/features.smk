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
