# Run records and the aggregated WER tables.


rule record:
    input:
        summary=train_summary,
        wers=lambda w: [f"{decode_dir(w.run, t)}/wer.json" for t in TEST_SETS],
    output:
        record=f"{EXP}/{{run}}/record.json",
    params:
        wer_args=lambda w, input: " ".join(f"--wer {t}={p}" for t, p in zip(TEST_SETS, input.wers)),
        method=DECODING_METHOD,
    resources:
        **RESOURCES["default"],
    log:
        f"{EXP}/{{run}}/log/record.log",
    shell:
        "streamkd record --run {wildcards.run} --train-summary {input.summary}"
        " {params.wer_args} --decoding-method {params.method} --out {output.record} > {log} 2>&1"


rule aggregate:
    input:
        records=[f"{EXP}/{run}/record.json" for run in all_runs()],
    output:
        csv=f"{RESULTS}/tables/wer.csv",
        md=WER_TABLE,
    params:
        out_dir=f"{RESULTS}/tables",
    resources:
        **RESOURCES["default"],
    log:
        f"{RESULTS}/logs/aggregate.log",
    shell:
        "streamkd aggregate --out-dir {params.out_dir} {input.records} > {log} 2>&1"
