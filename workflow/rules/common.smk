# Configuration checks and the helpers that name every file of the pipeline.

import json

from streamkd.config import validate_config
from streamkd.data.corpora import pipeline_splits

validate_config(config, source="snakemake config")

DATA = config["data_dir"]
EXP = config["exp_dir"]
RESULTS = config["results_dir"]
WER_TABLE = f"{RESULTS}/tables/wer.md"

SPLITS = list(pipeline_splits(config["corpus"]))  # train, dev and the corpus's test sets
TEST_SETS = config["decoding"]["test_sets"]
DECODING_METHOD = "ctc-1best"
THREADS = config["training"].get("threads", 1)

TEACHER_RUN = "teacher"


def student_runs():
    """One streaming baseline per chunk size and seed."""
    return [
        f"none-chunk{chunk}-seed{seed}"
        for chunk in config["grid"]["chunk_sizes"]
        for seed in config["grid"]["seeds"]
    ]


def all_runs():
    return [TEACHER_RUN] + student_runs()


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def train_summary(wildcards):
    return f"{EXP}/{wildcards.run}/train_summary.json"
