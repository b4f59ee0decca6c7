"""The corpora the pipeline can train on, and the splits each one provides.

Every corpus gives the pipeline the same three kinds of split:

* ``train``: what the models are trained on (several corpus parts may be combined);
* ``dev``: the validation set whose loss the trainer reports after each epoch;
* test sets, decoded and scored separately, named as the corpus names them.

``corpus.name`` in the config selects one of :data:`CORPORA`; ``decoding.test_sets`` must
be among its test sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Tuple


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    description: str
    # Which corpus parts make up each pipeline split (test sets map to themselves).
    train_parts: Tuple[str, ...]
    dev_parts: Tuple[str, ...]
    test_sets: Tuple[str, ...]
    # What ``streamkd download-librispeech`` fetches (empty: nothing to download).
    download_parts: Tuple[str, ...] = ()

    @property
    def splits(self) -> Tuple[str, ...]:
        """Every split the pipeline prepares: train, dev, then the test sets."""
        return ("train", "dev") + tuple(t for t in self.test_sets if t not in ("train", "dev"))

    def parts_of(self, split: str) -> Tuple[str, ...]:
        """The corpus parts a pipeline split is made of."""
        if split == "train":
            return self.train_parts
        if split == "dev":
            return self.dev_parts
        if split in self.test_sets:
            return (split,)
        raise KeyError(f"corpus {self.name!r} has no split {split!r}; it has {', '.join(self.splits)}")

    @property
    def all_parts(self) -> Tuple[str, ...]:
        seen: Dict[str, None] = {}
        for split in self.splits:
            for part in self.parts_of(split):
                seen[part] = None
        return tuple(seen)


LIBRISPEECH_TESTS = ("dev-clean", "dev-other", "test-clean", "test-other")

CORPORA: Mapping[str, CorpusSpec] = {
    spec.name: spec
    for spec in (
        CorpusSpec(
            name="embedded",
            description="speech synthesised offline from Debian fortunes (espeak-ng, flite)",
            train_parts=("train",),
            dev_parts=("dev",),
            test_sets=("dev", "test"),
        ),
        CorpusSpec(
            name="librispeech-100",
            description="LibriSpeech train-clean-100 (100 h)",
            train_parts=("train-clean-100",),
            dev_parts=("dev-clean", "dev-other"),
            test_sets=LIBRISPEECH_TESTS,
            download_parts=("train-clean-100",) + LIBRISPEECH_TESTS,
        ),
        CorpusSpec(
            name="librispeech-960",
            description="LibriSpeech train-clean-100 + train-clean-360 + train-other-500 (960 h)",
            train_parts=("train-clean-100", "train-clean-360", "train-other-500"),
            dev_parts=("dev-clean", "dev-other"),
            test_sets=LIBRISPEECH_TESTS,
            download_parts=("train-clean-100", "train-clean-360", "train-other-500") + LIBRISPEECH_TESTS,
        ),
        CorpusSpec(
            name="mini-librispeech",
            description="mini-LibriSpeech: train-clean-5 (5 h); dev-clean-2 validates and is the only test set",
            train_parts=("train-clean-5",),
            dev_parts=("dev-clean-2",),
            test_sets=("dev-clean-2",),
            download_parts=("train-clean-5", "dev-clean-2"),
        ),
    )
}


def corpus_spec(name: str) -> CorpusSpec:
    try:
        return CORPORA[name]
    except KeyError:
        raise KeyError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}") from None


MANIFESTS = "manifests"


def spec_from_config(corpus_config: Mapping) -> CorpusSpec:
    """The configured corpus: one of :data:`CORPORA`, or the user's manifests
    (``corpus.name: manifests``, :mod:`streamkd.data.manifests`), whose splits and whose
    ``train`` and ``dev`` parts the config declares; every declared split that is not
    trained on can be a test set (a dev split too)."""
    if corpus_config["name"] != MANIFESTS:
        return corpus_spec(corpus_config["name"])
    return CorpusSpec(
        name=MANIFESTS,
        description="prepared lhotse manifests declared in corpus.splits",
        train_parts=tuple(corpus_config["train"]),
        dev_parts=tuple(corpus_config["dev"]),
        test_sets=tuple(s for s in corpus_config["splits"] if s not in corpus_config["train"]),
    )


def pipeline_splits(corpus_config: Mapping) -> Tuple[str, ...]:
    """The splits the workflow prepares for the configured corpus."""
    return spec_from_config(corpus_config).splits
