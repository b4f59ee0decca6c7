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
