"""k2 is optional: CTC training, every KD method, streaming inference and the tables run without it.

What needs k2: the pruned RNN-T loss (transducer heads), the decoding graphs (CTC topology,
HLG) and the searches over them (``ctc-1best``, ``ctc-hlg``, ``rnnt-*``), and the forced
alignment behind the emission delays. Those places call :func:`require_k2`, which returns the
module or stops with :class:`K2NotInstalledError`, naming the feature and how to install a k2
build that matches the installed torch.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from types import ModuleType
from typing import Any, List, Mapping

# k2's own wheel index (one build per torch version, CPU and CUDA); PyPI has only one old build.
K2_WHEELS = "https://k2-fsa.github.io/k2"


class K2NotInstalledError(ImportError):
    """A feature that needs k2 was asked for in an environment without it."""


@lru_cache(maxsize=None)
def _import_k2():
    try:
        return importlib.import_module("k2"), None
    except (ImportError, OSError) as e:  # OSError: a k2 library built for another torch
        return None, e


def k2_available() -> bool:
    return _import_k2()[0] is not None


def k2_import_error() -> str:
    """Why ``import k2`` failed (empty where it works)."""
    error = _import_k2()[1]
    return "" if error is None else f"{type(error).__name__}: {error}"


def install_hint() -> str:
    """How to install k2 for the torch that is installed here."""
    import torch

    torch_version = torch.__version__.split("+")[0]
    cuda = torch.version.cuda
    page = f"{K2_WHEELS}/cuda.html" if cuda else f"{K2_WHEELS}/cpu.html"
    build = f"CUDA {cuda}" if cuda else "CPU"
    return (
        f"install the k2 build for torch {torch_version} ({build}) from k2's wheel index: "
        f"pick the wheel named '...torch{torch_version}' on {page} and 'pip install' it "
        "(on Python 3.9 with torch 1.13.1, 'pip install k2==1.23.4' from PyPI also works)"
    )


def require_k2(feature: str) -> ModuleType:
    """The k2 module, or K2NotInstalledError saying that ``feature`` needs k2 and how to get it."""
    module, error = _import_k2()
    if module is None:
        raise K2NotInstalledError(f"{feature} needs k2, which is not installed ({error}); {install_hint()}")
    return module


def k2_features_of(config: Mapping[str, Any]) -> List[str]:
    """What a (validated, defaults filled) pipeline config asks for that needs k2."""
    from streamkd.decode.methods import parse_method

    features = []
    if "transducer" in config["model"]["head"]["type"]:
        features.append(f"model.head.type {config['model']['head']['type']!r} (the pruned RNN-T loss)")
    k2_methods = [m for m in config["decoding"]["methods"] if parse_method(m).needs_k2]
    if k2_methods:
        features.append(f"decoding.methods {', '.join(k2_methods)} (use ctc-greedy and ctc-greedy-streaming)")
    if config["decoding"]["emission_delay"]:
        features.append("decoding.emission_delay: true (the teacher's forced alignment; set it to false)")
    return features


def check_k2_for(config: Mapping[str, Any], source: str = "config") -> None:
    """Stop at start-up, naming every setting that needs k2, when k2 is not installed."""
    if k2_available():
        return
    features = k2_features_of(config)
    if features:
        raise K2NotInstalledError(
            f"{source} needs k2, which is not installed ({_import_k2()[1]}):\n  "
            + "\n  ".join(features)
            + f"\n{install_hint()}"
        )


__all__ = ["K2NotInstalledError", "k2_available", "require_k2", "install_hint", "k2_features_of", "check_k2_for"]
