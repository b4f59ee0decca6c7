# streamkd: knowledge distillation from a full-context ASR encoder to a streaming one.
#
#   snakemake --cores 2                                   # default config.yaml
#   snakemake --cores 2 --configfile workflow/configs/micro.yaml
#
# The Snakefile is only the entry point; each stage lives in workflow/rules/.

import os
from pathlib import Path


configfile: os.path.join(workflow.basedir, "config.yaml")


report: "streamkd/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/lang.smk"
include: "workflow/rules/teacher_cache.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/decode.smk"
include: "workflow/rules/emission.smk"
include: "workflow/rules/results.smk"


localrules:
    all,


rule all:
    input:
        rules.aggregate.output,
        rules.plots.output,


onsuccess:
    if os.path.exists(WER_TABLE):
        print(f"\n{Path(WER_TABLE).read_text()}")
        print(
            f"Tables in {RESULTS}/tables, plots in {RESULTS}/plots; "
            f"for a one-page HTML report of them run: {report_page_command()}"
        )
