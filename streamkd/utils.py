"""Small helpers shared by every stage: atomic writes, logging set-up, durations."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional


def _default_file_mode() -> int:
    """What ``open(path, "w")`` would give a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary name keeps the final suffixes so that writers which infer the format from
    the extension (lhotse's ``.jsonl.gz``, torch) behave the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name.split('.')[0]}.", suffix="".join(path.suffixes))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            # mkstemp creates files readable by their owner only; give the usual permissions.
            os.chmod(tmp_path, _default_file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def setup_logging(log_file: Optional[str | Path] = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to a file that the workflow declares as the rule's log.

    In a data-parallel run (``torchrun`` sets ``RANK``) only rank 0 logs progress; the other
    processes log warnings and errors, marked with their rank.
    """
    rank = int(os.environ.get("RANK", "0"))
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a"))
    logging.basicConfig(
        level=level if rank == 0 else max(level, logging.WARNING),
        format="%(asctime)s %(levelname)s " + (f"[rank {rank}] " if rank else "") + "[%(name)s] %(message)s",
        handlers=handlers,
        force=True,
    )


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def load_tagged_payload(path: str | Path, fmt: str, what: str, expected: str) -> dict:
    """``torch.load`` a dict written with ``{"format": fmt, ...}``; errors name the file.

    ``what`` names the file in the missing/unreadable messages ("model checkpoint");
    ``expected`` completes "<path> is not ..." when the format tag does not match.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        # Our own files hold configs and optimiser state besides tensors: torch >= 2.6 would
        # refuse them by default (weights_only=True).
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several unrelated types for corrupt or foreign files
        raise ValueError(f"cannot read {what} {path}: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"{path} is not {expected}")
    return payload


def source_commit(package: Optional[Path] = None) -> Optional[str]:
    """The git commit of the streamkd checkout that runs, ``+dirty`` when the package has edits.

    None for an installed wheel or where git is missing: a record then names the version alone.
    ``package`` defaults to this package's folder.
    """
    import subprocess

    package = Path(package or Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise OSError(done.stderr.strip())
        return done.stdout.strip()

    try:
        # An install inside someone else's repository (a .venv in a project) is not tracked there.
        git("ls-files", "--error-unmatch", "--", "__init__.py")
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", str(package))
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def stream_digest(stream: BinaryIO) -> str:
    """SHA-256 of what a binary stream reads to its end, a megabyte at a time."""
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (a model's identity is its config and weights: model_digest)."""
    with open(path, "rb") as f:
        return stream_digest(f)
