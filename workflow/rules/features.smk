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
    wildcard_constraints:
        split="|".join(SPLITS),
    threads: config["features"].get("num_jobs", 1)
    log:
        f"{DATA}/logs/compute_fbank_{{split}}.log",
    shell:
        "streamkd compute-fbank --recordings {input.recordings}"
        " --supervisions {input.supervisions} --cuts {output.cuts} --storage-dir {params.storage_dir}"
        " --num-mel-bins {params.num_mel_bins} --num-jobs {threads} > {log} 2>&1"
