# Configuration checks and the helpers that name every file of the pipeline.

import json
import re
import shlex

from streamkd.config import validate_config
from streamkd.data.corpora import pipeline_splits
from streamkd.decode.methods import METHOD_NAMES, parse_method
from streamkd.distill.grid import cached_teacher_outputs, expand_grid, kd_weight
from streamkd.results.config import PLOTS as PLOT_NAMES, ResultsConfig
from streamkd.training.averaging import FINAL, averaged_model_name

validate_config(config, source="snakemake config")

DATA = config["data_dir"]
EXP = config["exp_dir"]
RESULTS = config["results_dir"]
RESULTS_CONFIG = ResultsConfig.from_dict(config.get("results"))
TABLE_NAMES = list(RESULTS_CONFIG.tables)  # "wer" first: results/tables/wer.md is the main table
WER_TABLE = f"{RESULTS}/tables/wer.md"

SPLITS = list(pipeline_splits(config["corpus"]))  # train, dev and the corpus's test sets
TEST_SETS = config["decoding"]["test_sets"]
DECODING_METHODS = config["decoding"].get("methods", ["ctc-1best"])
HEAD = config["model"].get("head", {"type": "ctc"})
THREADS = config["training"].get("threads", 1)
# Which weights are decoded: the final ones (model.pt) or their average over the last N epochs.
AVERAGE_LAST = config["decoding"].get("average_last", 1)
DECODED_MODEL = averaged_model_name(AVERAGE_LAST)
DECODED_MODEL_FILE = "model.pt" if DECODED_MODEL == FINAL else f"model-{DECODED_MODEL}.pt"
DECODE_FOLDER = "decode" if DECODED_MODEL == FINAL else f"decode-{DECODED_MODEL}"

TEACHER_RUN = "teacher"
TEACHER_MODEL = f"{EXP}/{TEACHER_RUN}/model.pt"

# Every student of the grid, by run name (see streamkd/distill/grid.py for the naming).
STUDENTS = {cell.run_name: cell for cell in expand_grid(config["grid"])}
STUDENT_PATTERN = "|".join(re.escape(name) for name in STUDENTS)


def student_runs():
    return list(STUDENTS)


def all_runs():
    return [TEACHER_RUN] + student_runs()


def run_methods(run):
    """Decoding methods of a run: streaming ones only for the (streaming) students."""
    return [m for m in DECODING_METHODS if run != TEACHER_RUN or not parse_method(m).streaming]


def decode_dir(run, test_set, method):
    return f"{EXP}/{run}/{DECODE_FOLDER}/{test_set}-{method}"


def alternatives(names):
    """A wildcard regex matching exactly one of ``names``."""
    return "|".join(re.escape(n) for n in names)


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def train_summary(wildcards):
    return f"{EXP}/{wildcards.run}/train_summary.json"


def shell_args(args):
    return " ".join(shlex.quote(str(a)) for a in args)
