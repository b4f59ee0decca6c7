import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

# The models under test are tiny: one thread avoids contention on a busy machine.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def _have(binary: str) -> bool:
    return shutil.which(binary) is not None


requires_tts = pytest.mark.skipif(
    not (_have("espeak-ng") and _have("flite")),
    reason="espeak-ng and flite are needed (workflow/scripts/setup.sh installs them)",
)


# Wall-clock cap of one Snakemake call: generous for the micro pipeline (minutes) and its
# SLURM run, but a hung job ends the test instead of the suite.
SNAKEMAKE_TIMEOUT = 3600


def run_snakemake(directory: Path, *args, configfiles=(), env=None, check: bool = False,
                  timeout: float = SNAKEMAKE_TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m snakemake ARGS`` with this repository's Snakefile, working in ``directory``."""
    configs = ["--configfile", *map(str, configfiles)] if configfiles else []
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *map(str, args), "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(directory), *configs],
        capture_output=True, text=True, env=env, check=check, timeout=timeout,
    )


def pytest_runtest_logreport(report):
    if report.skipped:
        _SKIPPED.append(f"{report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr}")


def pytest_sessionfinish(session, exitstatus):
    """With CI=true a skipped test fails the run: a missing system package must not hide coverage."""
    if _SKIPPED and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        print(f"\nCI=true: {len(_SKIPPED)} skipped test(s) fail the run:\n  " + "\n  ".join(_SKIPPED))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_SKIPPED: list = []


def job_counts(dry_run_stdout: str) -> Counter:
    """Rule name -> number of jobs, read from the job-stats table ``snakemake -n`` prints."""
    return Counter({p[0]: int(p[1]) for p in (line.split() for line in dry_run_stdout.splitlines())
                    if len(p) == 2 and p[1].isdigit()})


@pytest.fixture
def repo() -> Path:
    return REPO


def write_feature_cuts(directory: Path, feats, texts, name: str = "cuts"):
    """A lhotse cut manifest over in-test feature matrices (T_i, F), one supervision each."""
    from lhotse import CutSet, Features, LilcomChunkyWriter, MonoCut, SupervisionSegment

    directory.mkdir(parents=True, exist_ok=True)
    cuts = []
    with LilcomChunkyWriter(directory / f"{name}_feats") as writer:
        for i, (matrix, text) in enumerate(zip(feats, texts)):
            cut_id = f"{name}-{i:03d}"
            duration = matrix.shape[0] * 0.01
            key = writer.write(cut_id, matrix.numpy())
            features = Features(
                type="fbank", num_frames=matrix.shape[0], num_features=matrix.shape[1], frame_shift=0.01,
                sampling_rate=16000, start=0.0, duration=duration, storage_type=writer.name,
                storage_path=str(writer.storage_path), storage_key=key, channels=0,
                recording_id=cut_id,
            )
            supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=duration, text=text)
            cuts.append(MonoCut(id=cut_id, start=0.0, duration=duration, channel=0, supervisions=[supervision], features=features))
    path = directory / f"{name}.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def train_tiny_bpe(directory: Path, sentences, vocab_size: int = 30) -> Path:
    """A small sentencepiece model over ``sentences`` (blank at id 0, as the pipeline's)."""
    from streamkd.data.tokenizer import train_bpe

    path = directory / "bpe.model"
    train_bpe(sentences, path, vocab_size)
    return path
