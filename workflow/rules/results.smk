# Run records, the aggregated tables and the plots. The tables' and plots' outputs are marked
# for Snakemake's report: `snakemake --report report.html` after a run (captions in
# streamkd/report/).


rule record:
    input:
        summary=train_summary,
        wers=lambda w: [f"{d}/wer.json" for _, _, d in decode_items(w.run)],
        errors=lambda w: [f"{d}/errors.jsonl" for _, _, d in decode_items(w.run)],
        stats=lambda w: [f"{d}/decode.json" for _, _, d in decode_items(w.run)],
        delays=lambda w: [f"{d}/delay.json" for _, _, d in delay_items(w.run)],
        checks=[f"{DATA}/fbank/check_{t}.json" for t in TEST_SETS],
        test_cuts=[checked_cuts(t) for t in TEST_SETS],
    output:
        record=f"{EXP}/{{run}}/record.json",
    params:
        decodes=decode_args,
        delays=delay_args,
        checks=record_check_args,
        test_cuts=record_cuts_args,
        decoded_model=DECODED_MODEL,
    resources:
        **RESOURCES["default"],
    log:
        f"{EXP}/{{run}}/log/record.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd record --run {wildcards.run} --train-summary {input.summary} --decoded-model {params.decoded_model}"
        " {params.decodes} {params.delays} {params.checks} {params.test_cuts} --out {output.record} > {log} 2>&1"


rule aggregate:
    input:
        records=[f"{EXP}/{run}/record.json" for run in all_runs()],
    output:
        html=[table_output(name, "html") for name in TABLE_NAMES],
        csv=[table_output(name, "csv") for name in TABLE_NAMES],
        tex=[table_output(name, "tex") for name in TABLE_NAMES],
        md=[table_output(name, "md") for name in TABLE_NAMES],
        runs=report(
            f"{RESULTS}/tables/runs.csv",
            caption=f"{CAPTIONS}/runs.rst",
            category="Tables",
            subcategory="every run",
            labels={"file": "runs.csv", "format": "CSV"},
        ),
    params:
        out_dir=lambda w, output: parent_dir(output.runs),
        # A function, so that braces in a caption are not read as wildcards.
        results=lambda w: as_json(config["results"]),
    resources:
        **RESOURCES["default"],
    log:
        f"{RESULTS}/logs/aggregate.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd aggregate --out-dir {params.out_dir} --results-config {params.results:q}"
        " {input.records} > {log} 2>&1"


rule plots:
    input:
        records=[f"{EXP}/{run}/record.json" for run in all_runs()],
        summaries=[f"{EXP}/{run}/train_summary.json" for run in all_runs()],
    output:
        png=[plot_output(name, "png") for name in PLOT_NAMES],
        pdf=[plot_output(name, "pdf") for name in PLOT_NAMES],
    params:
        out_dir=lambda w, output: parent_dir(output.png[0]),
        # A function, so that braces in a caption are not read as wildcards.
        results=lambda w: as_json(config["results"]),
    resources:
        **RESOURCES["default"],
    log:
        f"{RESULTS}/logs/plots.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd plot --out-dir {params.out_dir} --results-config {params.results:q}"
        " {input.records} > {log} 2>&1"
