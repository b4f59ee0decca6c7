"""LibriSpeech and mini-LibriSpeech through lhotse's recipes.

The audio stays where the user keeps it (``corpus.dir``); nothing here downloads unless
asked to (:func:`download_librispeech_corpus`, the workflow's opt-in
``download_librispeech`` rule). :func:`prepare_librispeech_corpus` runs lhotse's
``prepare_librispeech`` over the corpus parts the configured corpus needs and writes one
recording and one supervision manifest per pipeline split (``train`` and ``dev`` may combine
several parts, see :mod:`streamkd.data.corpora`)::

    <out_dir>/<corpus>_recordings_<split>.jsonl.gz
    <out_dir>/<corpus>_supervisions_<split>.jsonl.gz
    <out_dir>/librispeech-parts/librispeech_{recordings,supervisions}_<part>.jsonl.gz   (lhotse's, reused)

Transcripts are kept as LibriSpeech writes them (upper case, apostrophes).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Dict, Tuple

from lhotse import RecordingSet, SupervisionSet, load_manifest
from lhotse.recipes.librispeech import download_librispeech, prepare_librispeech

from streamkd.data.corpora import corpus_spec
from streamkd.data.manifests import write_split

log = logging.getLogger(__name__)

PARTS_DIR = "librispeech-parts"


def find_librispeech_dir(corpus_dir: Path) -> Path:
    """``corpus_dir`` may be the folder that holds ``LibriSpeech/`` or ``LibriSpeech/`` itself."""
    corpus_dir = Path(corpus_dir)
    if (corpus_dir / "LibriSpeech").is_dir():
        return corpus_dir / "LibriSpeech"
    if corpus_dir.is_dir():
        return corpus_dir
    raise FileNotFoundError(
        f"LibriSpeech not found at {corpus_dir}: set corpus.dir to the folder that holds LibriSpeech/ "
        "(or run the workflow's download_librispeech rule to fetch it there)"
    )


def _check_parts(librispeech_dir: Path, parts) -> None:
    missing = [p for p in parts if not (librispeech_dir / p).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{librispeech_dir} lacks the LibriSpeech part(s) {', '.join(missing)} "
            f"(expected {librispeech_dir}/<part>/<speaker>/<chapter>/...); download them with the "
            "workflow's download_librispeech rule or `streamkd download-librispeech`"
        )


def prepare_librispeech_corpus(
    corpus_dir: Path, corpus_name: str, out_dir: Path, num_jobs: int = 1
) -> Dict[str, Tuple[Path, Path]]:
    """Write the manifests of every pipeline split of ``corpus_name``; returns their paths."""
    spec = corpus_spec(corpus_name)
    if not spec.download_parts:
        raise ValueError(f"{corpus_name!r} is not a LibriSpeech corpus")
    librispeech_dir = find_librispeech_dir(corpus_dir).resolve()
    _check_parts(librispeech_dir, spec.all_parts)
    out_dir = Path(out_dir)
    parts_dir = out_dir / PARTS_DIR
    # lhotse skips the parts whose manifests exist; make sure they came from this corpus.
    source_file = parts_dir / "source.json"
    if parts_dir.is_dir():
        source = json.loads(source_file.read_text()).get("corpus_dir") if source_file.is_file() else None
        if source != str(librispeech_dir):
            log.info("discarding part manifests of %s (now preparing %s)", source, librispeech_dir)
            shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    source_file.write_text(json.dumps({"corpus_dir": str(librispeech_dir)}) + "\n")

    log.info("preparing LibriSpeech parts %s from %s", ", ".join(spec.all_parts), librispeech_dir)
    prepare_librispeech(librispeech_dir, dataset_parts=list(spec.all_parts), output_dir=parts_dir, num_jobs=num_jobs)

    written = {}
    for split in spec.splits:
        parts = spec.parts_of(split)
        recordings = RecordingSet.from_recordings(
            r for p in parts for r in load_manifest(parts_dir / f"librispeech_recordings_{p}.jsonl.gz")
        )
        supervisions = SupervisionSet.from_segments(
            s for p in parts for s in load_manifest(parts_dir / f"librispeech_supervisions_{p}.jsonl.gz")
        )
        if not len(supervisions):
            raise ValueError(f"no utterances in LibriSpeech part(s) {', '.join(parts)} under {librispeech_dir}")
        written[split] = write_split(out_dir, corpus_name, split, parts, recordings, supervisions)
    return written


def download_librispeech_corpus(target_dir: Path, corpus_name: str) -> Path:
    """Fetch (from openslr.org) and unpack the parts ``corpus_name`` needs into ``target_dir``.

    Parts that were unpacked completely before are skipped. Returns ``target_dir/LibriSpeech``.
    """
    spec = corpus_spec(corpus_name)
    if not spec.download_parts:
        raise ValueError(f"{corpus_name!r} is not a LibriSpeech corpus: nothing to download")
    log.info("downloading LibriSpeech parts %s into %s", ", ".join(spec.download_parts), target_dir)
    return download_librispeech(Path(target_dir), dataset_parts=list(spec.download_parts))
