# Configuration checks and the helpers that name every file of the pipeline.

import json
import re

from streamkd.config import validate_config
from streamkd.decode.methods import METHOD_NAMES, parse_method

validate_config(config, source="snakemake config")

DATA = config["data_dir"]
EXP = config["exp_dir"]
RESULTS = config["results_dir"]
WER_TABLE = f"{RESULTS}/tables/wer.md"

SPLITS = ["train", "dev", "test"]
TEST_SETS = config["decoding"]["test_sets"]
DECODING_METHODS = config["decoding"].get("methods", ["ctc-1best"])
HEAD = config["model"].get("head", {"type": "ctc"})
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


def run_methods(run):
    """Decoding methods of a run: streaming ones only for the (streaming) students."""
    return [m for m in DECODING_METHODS if run != TEACHER_RUN or not parse_method(m).streaming]


def decode_dir(run, test_set, method):
    return f"{EXP}/{run}/decode/{test_set}-{method}"


def alternatives(names):
    """A wildcard regex matching exactly one of ``names``."""
    return "|".join(re.escape(n) for n in names)


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def train_summary(wildcards):
    return f"{EXP}/{wildcards.run}/train_summary.json"
