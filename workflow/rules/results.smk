# Run records and the aggregated WER tables.


def decode_items(run):
    return [(t, m, decode_dir(run, t, m)) for t in TEST_SETS for m in run_methods(run)]


rule record:
    input:
        summary=train_summary,
        wers=lambda w: [f"{d}/wer.json" for _, _, d in decode_items(w.run)],
        stats=lambda w: [f"{d}/decode.json" for _, _, d in decode_items(w.run)],
    output:
        record=f"{EXP}/{{run}}/record.json",
    params:
        decodes=lambda w: " ".join(
            f"--wer {t}/{m}={d}/wer.json --decode-stats {t}/{m}={d}/decode.json" for t, m, d in decode_items(w.run)
        ),
    log:
        f"{EXP}/{{run}}/log/record.log",
    shell:
        "streamkd record --run {wildcards.run} --train-summary {input.summary}"
        " {params.decodes} --out {output.record} > {log} 2>&1"


rule aggregate:
    input:
        records=[f"{EXP}/{run}/record.json" for run in all_runs()],
    output:
        csv=f"{RESULTS}/tables/wer.csv",
        md=WER_TABLE,
    params:
        out_dir=f"{RESULTS}/tables",
    log:
        f"{RESULTS}/logs/aggregate.log",
    shell:
        "streamkd aggregate --out-dir {params.out_dir} {input.records} > {log} 2>&1"
