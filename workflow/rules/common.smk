# Configuration checks and the helpers that name every file of the pipeline. Every function
# of the workflow lives here (the stage files hold rules only); the schema's defaults are
# filled into `config` by validate_config, so the rules read every key directly.

import json
import os
import re
import shlex

from streamkd.config import validate_config
from streamkd.data.corpora import pipeline_splits
from streamkd.decode.methods import METHOD_NAMES, parse_method
from streamkd.distill.grid import (
    decode_chunk_sizes,
    expand_grid,
    kd_weight,
    parse_teacher_cache_name,
    teacher_cache_name,
)
from streamkd.dynamic_chunk import AT_CHUNK, decode_key, split_decode_key
from streamkd.k2_support import check_k2_for
from streamkd.results.config import PLOTS as PLOT_NAMES, ResultsConfig
from streamkd.training.averaging import FINAL, averaged_model_name

validate_config(config, source="snakemake config")
check_k2_for(config, source="snakemake config")

DATA = config["data_dir"]
EXP = config["exp_dir"]
RESULTS = config["results_dir"]
RESULTS_CONFIG = ResultsConfig.from_dict(config["results"])
TABLE_NAMES = list(RESULTS_CONFIG.tables)  # "wer" first: results/tables/wer.md is the main table
WER_TABLE = f"{RESULTS}/tables/wer.md"

SPLITS = list(pipeline_splits(config["corpus"]))  # train, dev and the corpus's test sets
TEST_SETS = config["decoding"]["test_sets"]
DECODING_METHODS = config["decoding"]["methods"]
HEAD = config["model"]["head"]
THREADS = config["training"]["threads"]
# One conda environment for every rule (`snakemake --use-conda`); it pins requirements.txt.
CONDA_ENV = "../envs/streamkd.yaml"
# Which weights are decoded: the final ones (model.pt) or their average over the last N epochs.
AVERAGE_LAST = config["decoding"]["average_last"]
DECODED_MODEL = averaged_model_name(AVERAGE_LAST)
DECODED_MODEL_FILE = "model.pt" if DECODED_MODEL == FINAL else f"model-{DECODED_MODEL}.pt"
DECODE_FOLDER = "decode" if DECODED_MODEL == FINAL else f"decode-{DECODED_MODEL}"

TEACHER_RUN = "teacher"
TEACHER_MODEL = f"{EXP}/{TEACHER_RUN}/model.pt"

# Every student of the grid, by run name (see streamkd/distill/grid.py for the naming).
STUDENTS = {cell.run_name: cell for cell in expand_grid(config["grid"])}
STUDENT_PATTERN = "|".join(re.escape(name) for name in STUDENTS)
# A dynamic-chunk student (grid.chunk_sizes: dynamic) is decoded at each of these chunk sizes,
# in folders named METHOD@chunkN (decoding.chunk_sizes, else the grid's integer chunk sizes).
DYNAMIC_DECODE_CHUNKS = decode_chunk_sizes(config) if any(c.dynamic for c in STUDENTS.values()) else []
# The {at_chunk} wildcard of the decode folders: empty, or @chunkN for a dynamic-chunk student.
AT_CHUNK_PATTERN = f"({re.escape(AT_CHUNK)}[0-9]+)?"


def student_runs():
    return list(STUDENTS)


def all_runs():
    return [TEACHER_RUN] + student_runs()


def run_methods(run):
    """Decoding methods of a run: streaming ones only for the (streaming) students."""
    return [m for m in DECODING_METHODS if run != TEACHER_RUN or not parse_method(m).streaming]


def run_chunks(run):
    """The chunk sizes a run is decoded at: its own (None) or, for a dynamic-chunk student, each
    of DYNAMIC_DECODE_CHUNKS."""
    cell = STUDENTS.get(run)
    return DYNAMIC_DECODE_CHUNKS if cell is not None and cell.dynamic else [None]


def decode_dir(run, test_set, method, chunk=None):
    return f"{EXP}/{run}/{DECODE_FOLDER}/{test_set}-{decode_key(method, chunk)}"


def chunk_arg(wildcards):
    """--chunk-size N for a decode folder named METHOD@chunkN, else nothing (the model's own)."""
    chunk = split_decode_key(wildcards.method + wildcards.at_chunk)[1]
    return "" if chunk is None else f"--chunk-size {chunk}"


def alternatives(names):
    """A wildcard regex matching exactly one of ``names``."""
    return "|".join(re.escape(n) for n in names)


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def train_summary(wildcards):
    return f"{EXP}/{wildcards.run}/train_summary.json"


def shell_args(args):
    return " ".join(shlex.quote(str(a)) for a in args)


def parent_dir(path, levels=1):
    """The folder ``levels`` above ``path``: params derived from outputs, never hard-coded."""
    for _ in range(levels):
        path = os.path.dirname(path)
    return path


# --- corpus.smk


def manifest(kind, split):
    return f"{CORPUS_DIR}/manifests/{CORPUS_NAME}_{kind}_{split}.jsonl.gz"


# --- features.smk


def speed_perturb_flag(wildcards):
    """Speed perturbation applies to the training split only."""
    return "--speed-perturb" if wildcards.split == "train" and config["features"]["speed_perturb"] else ""


# --- train.smk


def teacher_for(wildcards):
    """KD students read the teacher's checkpoint (and its cache); the baseline needs none."""
    cell = STUDENTS[wildcards.student]
    if cell.method == "none":
        return []
    cache = teacher_cache(cell)
    return [TEACHER_MODEL] + ([cache] if cache else [])


def teacher_args(wildcards):
    return shell_args(["--seed", config["training"]["teacher_seed"]])


def student_args(wildcards):
    """The grid cell's arguments (chunk size, seed, KD method, ...) and the KD settings."""
    cell = STUDENTS[wildcards.student]
    args = ["--left-chunks", config["model"]["left_chunks"]] + cell.train_args()
    if cell.dynamic:
        args += ["--dynamic-chunk", as_json(config["grid"]["dynamic_chunk"])]
    if cell.method != "none":
        args += [
            "--kd",
            as_json({**config["kd"], "weight": kd_weight(cell, config["kd"])}),
            "--teacher",
            TEACHER_MODEL,
            "--teacher-encoder",
            as_json(config["model"]["teacher"]),
        ]
        if teacher_cache(cell):
            args += ["--teacher-targets", teacher_cache(cell)]
    return shell_args(args)


def kd_train_threads(wildcards):
    """A distilling student may use its own thread count (training.kd_threads)."""
    return TRAIN_THREADS if STUDENTS[wildcards.student].method == "none" else KD_TRAIN_THREADS


# --- teacher_cache.smk

TEACHER_CACHE = f"{EXP}/{TEACHER_RUN}/targets"


def teacher_cache(cell):
    """The cut manifest of the teacher cache a grid cell reads, or None."""
    name = teacher_cache_name(cell, config)
    return None if name is None else f"{TEACHER_CACHE}/{name}/cuts_train.jsonl.gz"


def cache_args(wildcards):
    layers, posteriors = parse_teacher_cache_name(wildcards.targets)
    return shell_args(
        (["--layers", ",".join(map(str, layers))] if layers else []) + (["--posteriors"] if posteriors else [])
    )


# --- features.smk: the data check


def checked_cuts(split):
    return f"{DATA}/fbank/cuts_{split}.checked.jsonl.gz"


def split_kind(split):
    """A split that is decoded is checked as a test set, even when training validates on it."""
    if split == "train":
        return "train"
    return "test" if split in TEST_SETS else "dev"


def max_training_seconds():
    """The shorter of the two roles' limits, so that neither drops utterances unreported."""
    return min(config["training"][r]["max_utterance_seconds"] for r in ("teacher", "student"))


def length_bound():
    """The loss whose length bound applies: CTC's (the stricter) whenever a CTC head trains.
    Naming the bound, not the head, lets runs with ctc and transducer+ctc heads share data/."""
    return "transducer" if HEAD["type"] == "transducer" else "ctc"


def check_data_args(wildcards):
    check = config["data_check"]
    args = [
        "--kind",
        split_kind(wildcards.split),
        "--head",
        length_bound(),
        "--max-excluded-fraction",
        check["max_excluded_fraction"],
        "--max-utterance-seconds",
        max_training_seconds(),
    ]
    if check["allow_test_exclusion"]:
        args.append("--allow-test-exclusion")
    return shell_args(args)


# --- emission.smk

ALIGN_OUT = f"{EXP}/{TEACHER_RUN}/align/{{test_set}}-{{head}}.jsonl"


def emission_methods(run):
    """Token-level methods of a run that get emission times: students' chunk-by-chunk searches,
    the teacher's offline ones (HLG decoding outputs words and is left out)."""
    if not config["decoding"]["emission_delay"]:
        return []
    methods = [parse_method(m) for m in run_methods(run)]
    return [m.name for m in methods if m.search != "hlg" and m.streaming == (run != TEACHER_RUN)]


def reference_alignment(wildcards):
    return ALIGN_OUT.format(test_set=wildcards.test_set, head=parse_method(wildcards.method).head)


# --- decode.smk


def decoding_graph(wildcards):
    """The graph file a method reads: the CTC topology, HLG, or none (transducer searches)."""
    graph = parse_method(wildcards.method).graph
    return {"ctc_topo": [CTC_TOPO], "hlg": [HLG]}.get(graph, [])


def search_args():
    """Every search option of the decoding section as command-line flags."""
    keys = (
        "search_beam",
        "output_beam",
        "beam",
        "fast_beam",
        "max_states",
        "max_contexts",
        "max_symbols_per_frame",
        "max_duration",
    )
    return " ".join(f"--{key.replace('_', '-')} {config['decoding'][key]}" for key in keys)


# --- results.smk


def decode_items(run):
    """(test set, decode name, folder) of every decode of a run; the name is the method, or
    METHOD@chunkN for a dynamic-chunk student (the record's key)."""
    return [
        (t, decode_key(m, c), decode_dir(run, t, m, c))
        for t in TEST_SETS
        for m in run_methods(run)
        for c in run_chunks(run)
    ]


def delay_items(run):
    """The decodes of a run whose emission delay is measured (one per chunk size for a dynamic student)."""
    timed = emission_methods(run)
    return [(t, key, d) for t, key, d in decode_items(run) if split_decode_key(key)[0] in timed]


def decode_args(wildcards):
    return " ".join(
        f"--wer {t}/{m}={d}/wer.json --errors {t}/{m}={d}/errors.jsonl --decode-stats {t}/{m}={d}/decode.json"
        for t, m, d in decode_items(wildcards.run)
    )


def record_check_args(wildcards):
    return " ".join(f"--data-check {t}={DATA}/fbank/check_{t}.json" for t in TEST_SETS)


def record_cuts_args(wildcards):
    return " ".join(f"--test-cuts {t}={checked_cuts(t)}" for t in TEST_SETS)


def delay_args(wildcards):
    return " ".join(f"--delay {t}/{m}={d}/delay.json" for t, m, d in delay_items(wildcards.run))


TABLE_FORMATS = {"html": "HTML", "csv": "CSV", "tex": "LaTeX", "md": "Markdown"}
PLOT_TITLES = {
    "wer_vs_chunk": "WER vs chunk size",
    "wer_vs_apc_shift": "WER vs APC shift",
    "loss_curves": "loss curves",
    "wer_vs_delay": "WER vs emission delay",
}
# Captions of Snakemake's report ship with the package (streamkd/report/), relative to the rule files.
CAPTIONS = "../../streamkd/report"


def table_output(name, ext):
    return report(
        f"{RESULTS}/tables/{name}.{ext}",
        caption=f"{CAPTIONS}/table.rst",
        category="Tables",
        subcategory=name,
        labels={"file": f"{name}.{ext}", "format": TABLE_FORMATS[ext]},
    )


def plot_output(name, fmt):
    return report(
        f"{RESULTS}/plots/{name}.{fmt}",
        caption=f"{CAPTIONS}/{name}.rst",
        category="Plots",
        subcategory=PLOT_TITLES[name],
        labels={"file": f"{name}.{fmt}", "format": fmt.upper()},
    )


def report_page_command():
    """The offline command that builds the run's one-page HTML report.

    `snakemake --report` is not recommended: Snakemake 7 downloads its scripts and licence
    texts while building the page. The results section comes from the last config file given
    on the command line that has one (config.yaml's equals the schema's defaults).
    """
    with_results = [f for f in workflow.overwrite_configfiles or [] if "results" in load_yaml(f)]
    config_arg = f" --config {shlex.quote(str(with_results[-1]))}" if with_results else ""
    return f"streamkd report --exp-dir {shlex.quote(EXP)} --out-dir {shlex.quote(RESULTS)}{config_arg}"


def load_yaml(path):
    import yaml

    with open(path) as f:
        return yaml.safe_load(f) or {}
