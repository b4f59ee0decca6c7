"""The SLURM profile and the resources the rules ask for, up to a real single-node SLURM.

The last test installs and starts SLURM with accounting on this machine
(workflow/scripts/local_slurm.sh: munge, MariaDB, slurmdbd, slurmctld, slurmd), runs the
micro pipeline through workflow/profiles/slurm so that every rule is a SLURM job, checks the
WER table and that sacct saw exactly one completed job per job of the DAG, and stops every
daemon it started. It needs root; elsewhere it is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from streamkd.cluster import rule_resources, snakemake_major, train_launcher, train_threads
from streamkd.config import validate_config
from streamkd.k2_support import k2_available

from helpers import REPO, job_counts, run_snakemake

PROFILE = REPO / "workflow/profiles/slurm"
LOCAL_SLURM = REPO / "workflow/scripts/local_slurm.sh"


def micro_configfiles() -> list:
    """micro.yaml, and the overlay that drops the k2 decoding methods where k2 is missing."""
    configs = [REPO / "workflow/configs/micro.yaml"]
    if not k2_available():
        configs.append(REPO / "workflow/configs/micro-no-k2.yaml")
    return configs


def micro_config(**training) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for path in micro_configfiles():
        for key, value in yaml.safe_load(path.read_text()).items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    config["training"].update(training)
    return validate_config(config, source="micro config")  # fills the schema's defaults


# -- resources declared by the rules -------------------------------------------------------


def test_training_requests_gpus_and_requeue_other_stages_do_not():
    config = micro_config(gpus=4)
    train7 = rule_resources(config, "train", major=7)
    assert train7["gpu"] == 4 and train7["slurm_extra"] == "--gres=gpu:4 --requeue"
    assert (train7["mem_mb"], train7["runtime"]) == tuple(
        config["resources"]["train"][k] for k in ("mem_mb", "runtime")
    )
    train8 = rule_resources(config, "train", major=8)
    assert train8["gpu"] == 4 and train8["tasks_per_gpu"] == 0 and "slurm_extra" not in train8
    for stage in ("default", "corpus", "features", "decode"):
        for major in (7, 8):
            resources = rule_resources(config, stage, major=major)
            assert "gpu" not in resources and "slurm_extra" not in resources, (stage, resources)
    cpu = rule_resources(micro_config(gpus=0), "train", major=7)
    assert cpu["gpu"] == 0 and cpu["slurm_extra"] == "--requeue"


def test_partition_and_defaults_come_from_the_config():
    config = micro_config()
    config["resources"] = {"train": {"partition": "a100", "mem_mb": 64000}}
    train = rule_resources(config, "train", major=7)
    assert train["slurm_partition"] == "a100" and train["mem_mb"] == 64000 and train["runtime"] == 2880
    assert "slurm_partition" not in rule_resources(config, "decode", major=7)


def test_training_processes_and_threads():
    assert train_launcher(micro_config(gpus=0)) == "CUDA_VISIBLE_DEVICES= "
    assert train_launcher(micro_config(gpus=1)) == ""
    four = train_launcher(micro_config(gpus=4, threads=3))
    assert four.startswith("torchrun --nnodes 1 --nproc_per_node 4 ") and four.endswith("--no_python ")
    assert "localhost:0" in four  # a free port: several training jobs may share a node
    gloo = train_launcher(micro_config(gpus=0, cpu_processes=2))
    assert gloo.startswith("CUDA_VISIBLE_DEVICES= GLOO_SOCKET_IFNAME=lo torchrun") and "--nproc_per_node 2" in gloo
    assert train_threads(micro_config(gpus=4, threads=3)) == 12
    assert train_threads(micro_config(gpus=0, threads=2)) == 2


def dry_run(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, "-n", "-p", configfiles=[path])
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def job_blocks(dry_run_output: str) -> dict:
    """rule name -> list of (resources line, shell command) from a dry run with -p."""
    blocks = {}
    for block in re.split(r"\n(?=\[|rule |localrule )", dry_run_output):
        head = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if head:
            resources = re.search(r"resources: (.*)", block)
            blocks.setdefault(head.group(1), []).append((resources.group(1) if resources else "", block))
    return blocks


@pytest.mark.k2
def test_rules_carry_their_resources_in_the_dag(tmp_path):
    config = micro_config(gpus=2)
    blocks = job_blocks(dry_run(tmp_path, config))
    for rule in ("train_teacher", "train_student"):
        resources, shell = blocks[rule][0]
        assert "gpu=2" in resources, resources
        if snakemake_major() >= 8:  # the plugin turns gpu into --gpus; requeue is in the profile
            assert "tasks_per_gpu=0" in resources and "slurm_extra" not in resources, resources
        else:
            assert "slurm_extra=--gres=gpu:2 --requeue" in resources, resources
        train = config["resources"]["train"]
        assert f"mem_mb={train['mem_mb']}" in resources and f"runtime={train['runtime']}" in resources
        assert "torchrun --nnodes 1 --nproc_per_node 2" in shell
    for rule in ("prepare_corpus", "compute_fbank", "train_bpe", "decode", "score", "aggregate"):
        resources, _ = blocks[rule][0]
        assert "mem_mb=" in resources and "runtime=" in resources, (rule, resources)
        assert "gpu" not in resources, (rule, resources)


# -- the profile files ------------------------------------------------------------------------


def snakemake_options() -> set:
    """The command-line options of the installed Snakemake (and of its installed plugins)."""
    if snakemake_major() >= 8:
        from snakemake.cli import get_argument_parser
    else:
        from snakemake import get_argument_parser
    return {opt.lstrip("-") for action in get_argument_parser()._actions for opt in action.option_strings}


def test_the_profile_of_the_installed_snakemake_uses_only_options_it_knows():
    """Snakemake 7 reads config.yaml, 8 and later config.v8+.yaml (with the executor plugin's options)."""
    major = snakemake_major()
    profile = yaml.safe_load((PROFILE / ("config.v8+.yaml" if major >= 8 else "config.yaml")).read_text())
    known = snakemake_options()
    assert set(profile) <= known, set(profile) - known
    if major < 8:
        assert profile["slurm"] is True
        assert "slurm_partition=cpu" in profile["default-resources"]
        assert {"train_teacher:slurm_partition=gpu", "train_student:slurm_partition=gpu"} <= set(
            profile["set-resources"]
        )
    else:
        assert profile["executor"] == "slurm" and "slurm-requeue" in known


def test_snakemake8_profile_selects_the_slurm_executor_plugin():
    profile = yaml.safe_load((PROFILE / "config.v8+.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-requeue"] is True
    assert profile["default-resources"]["slurm_partition"] == "cpu"
    assert profile["set-resources"]["train_student"]["slurm_partition"] == "gpu"
    assert "slurm" not in profile  # the flag Snakemake 8 removed


# -- a real SLURM -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip(
            "the single-node SLURM test needs root (it installs slurm-wlm, munge, slurmdbd and "
            "mariadb-server with apt-get and runs their daemons)"
        )
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("needs Debian's apt-get to install SLURM (or SLURM already installed)")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "STREAMKD_SLURM_DIR": str(state)}
    # Starting may install the Debian packages first.
    start = subprocess.run(["bash", str(LOCAL_SLURM), "start"], capture_output=True, text=True, env=env, timeout=1200)
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        env["SLURM_CONF"] = str(state / "etc/slurm.conf")
        yield env
    finally:
        stop = subprocess.run(["bash", str(LOCAL_SLURM), "stop"], capture_output=True, text=True, env=env, timeout=300)
        assert stop.returncode == 0, stop.stderr[-2000:]
        for pidfile in (state / "run").glob("*.pid"):
            pytest.fail(f"{pidfile.name} left behind by local_slurm.sh stop")


def dag_job_counts(workdir: Path, configs) -> Counter:
    # `--quiet rules`: a bare --quiet of Snakemake 8+ also hides the job-stats table.
    return job_counts(run_snakemake(workdir, "-n", "--quiet", "rules", configfiles=configs, check=True).stdout)


def slurm_logs(workdir: Path) -> dict:
    """SLURM job id -> rule name, from the log files the executor keeps per job.

    Snakemake 7 writes .snakemake/slurm_logs/rule_<name>/<jobid>.log; the executor plugin of
    Snakemake 8+ puts each job's log in a subfolder per wildcard values,
    rule_<name>/<wildcards>/<jobid>.log (none for a rule without wildcards).
    """
    logs = {}
    for path in (workdir / ".snakemake/slurm_logs").rglob("*.log"):
        rule_dir = path.relative_to(workdir / ".snakemake/slurm_logs").parts[0]
        assert rule_dir.startswith("rule_") and path.stem.isdigit(), path
        assert path.stem not in logs, (path, logs[path.stem])
        logs[path.stem] = rule_dir[len("rule_") :]
    return logs


@pytest.mark.slow
def test_micro_pipeline_runs_every_rule_as_a_slurm_job(local_slurm, tmp_path):
    env = {**local_slurm, "USER": os.environ.get("USER") or "root"}  # the executor calls sacct -u $USER
    configs = micro_configfiles()
    expected = dag_job_counts(tmp_path, configs)
    total = expected.pop("total", 0)
    assert expected.pop("all", 0) == 1 and sum(expected.values()) == total - 1 > 0, expected
    # (the target rule `all` is local: it runs no command)
    # Snakemake 8+'s executor deletes the log of every successful job unless told to keep them,
    # and first asks sacct about a job 40 s after submitting it, which on this DAG of short
    # jobs would be most of the test's wall time (a cluster's long jobs never notice).
    plugin_options = (
        ["--slurm-keep-successful-logs", "--slurm-init-seconds-before-status-checks", "2"]
        if snakemake_major() >= 8
        else []
    )
    started = time.time()
    result = run_snakemake(tmp_path, "--profile", PROFILE, "--jobs", "4", *plugin_options, configfiles=configs, env=env)
    wall = time.time() - started
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]

    table = pd.read_csv(tmp_path / "results/tables/wer.csv")
    # micro.yaml's grid: the baseline and one aux KD student beside the teacher.
    assert set(table["method"]) == {"teacher", "none", "aux"} and table["wer_mean"].between(0, 1000).all()

    # Every job of the DAG was one SLURM job: Snakemake names them all after its run id,
    # and keeps one log per job under .snakemake/slurm_logs/rule_<name>/.
    logs = slurm_logs(tmp_path)
    assert Counter(logs.values()) == expected
    sacct = subprocess.run(
        [
            "sacct",
            "-X",
            "--parsable2",
            "--noheader",
            "--format=JobIdRaw,JobName,State",
            "--starttime",
            time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started - 60)),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    rows = [line.split("|") for line in sacct.stdout.splitlines() if line.strip()]
    ours = [r for r in rows if r[0] in logs]
    assert len(ours) == sum(expected.values()) == len(logs)
    assert {r[2] for r in ours} == {"COMPLETED"}
    assert len({r[1] for r in ours}) == 1  # all submitted by this one Snakemake run
    print(f"\nSLURM: {len(ours)} jobs for {sum(expected.values())} DAG jobs, {wall:.0f} s wall time")
