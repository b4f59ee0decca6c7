# Run records, the aggregated tables and the plots. The tables' and plots' outputs are marked
# for Snakemake's report: `snakemake --report report.html` after a run (captions in
# workflow/report/).


def decode_items(run):
    return [(t, m, decode_dir(run, t, m)) for t in TEST_SETS for m in run_methods(run)]


rule record:
    input:
        summary=train_summary,
        wers=lambda w: [f"{d}/wer.json" for _, _, d in decode_items(w.run)],
        errors=lambda w: [f"{d}/errors.jsonl" for _, _, d in decode_items(w.run)],
        stats=lambda w: [f"{d}/decode.json" for _, _, d in decode_items(w.run)],
    output:
        record=f"{EXP}/{{run}}/record.json",
    params:
        decodes=lambda w: " ".join(
            f"--wer {t}/{m}={d}/wer.json --errors {t}/{m}={d}/errors.jsonl --decode-stats {t}/{m}={d}/decode.json"
            for t, m, d in decode_items(w.run)
        ),
    resources:
        **RESOURCES["default"],
    log:
        f"{EXP}/{{run}}/log/record.log",
    shell:
        "streamkd record --run {wildcards.run} --train-summary {input.summary} --decoded-model {DECODED_MODEL}"
        " {params.decodes} --out {output.record} > {log} 2>&1"


TABLE_FORMATS = {"html": "HTML", "csv": "CSV", "tex": "LaTeX", "md": "Markdown"}


def table_output(name, ext):
    return report(
        f"{RESULTS}/tables/{name}.{ext}",
        caption="../report/table.rst",
        category="Tables",
        subcategory=name,
        labels={"file": f"{name}.{ext}", "format": TABLE_FORMATS[ext]},
    )


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
            caption="../report/runs.rst",
            category="Tables",
            subcategory="every run",
            labels={"file": "runs.csv", "format": "CSV"},
        ),
    params:
        out_dir=f"{RESULTS}/tables",
        results=as_json(config.get("results", {})),
    resources:
        **RESOURCES["default"],
    log:
        f"{RESULTS}/logs/aggregate.log",
    shell:
        "streamkd aggregate --out-dir {params.out_dir} --results-config {params.results:q}"
        " {input.records} > {log} 2>&1"


PLOT_TITLES = {
    "wer_vs_chunk": "WER vs chunk size",
    "wer_vs_apc_shift": "WER vs APC shift",
    "loss_curves": "loss curves",
}


def plot_output(name, fmt):
    return report(
        f"{RESULTS}/plots/{name}.{fmt}",
        caption=f"../report/{name}.rst",
        category="Plots",
        subcategory=PLOT_TITLES[name],
        labels={"file": f"{name}.{fmt}", "format": fmt.upper()},
    )


rule plots:
    input:
        records=[f"{EXP}/{run}/record.json" for run in all_runs()],
        summaries=[f"{EXP}/{run}/train_summary.json" for run in all_runs()],
    output:
        png=[plot_output(name, "png") for name in PLOT_NAMES],
        pdf=[plot_output(name, "pdf") for name in PLOT_NAMES],
    params:
        out_dir=f"{RESULTS}/plots",
        results=as_json(config.get("results", {})),
    resources:
        **RESOURCES["default"],
    log:
        f"{RESULTS}/logs/plots.log",
    shell:
        "streamkd plot --out-dir {params.out_dir} --results-config {params.results:q}"
        " {input.records} > {log} 2>&1"
