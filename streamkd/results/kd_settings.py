"""The KD settings that tell two distilled students apart besides method, layers, shift, loss and weight.

A run record keeps them as flat fields (:data:`SETTING_FIELDS`), read from the training
summary's ``kd`` dict. Each is null where the run's method does not use it (the temperature
of an ``aux`` run, the branch of a ``token`` run), so a setting that a method ignores never
splits its rows. A record or summary written before a field existed takes the value
training used then: the :class:`~streamkd.distill.config.KdConfig` default, and for a
student ``left_chunks = -1`` (unlimited left context).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from streamkd.distill.config import KdConfig

DEFAULT_LEFT_CHUNKS = -1  # what train_asr used before records carried left_chunks
TEACHER_INPUT_METHODS = ("token", "layer", "aux")  # methods that run the teacher
SETTING_FIELDS = (
    "kd_teacher_input",
    "kd_temperature",
    "kd_token_delay",
    "aux_type",
    "aux_attention",
    "aux_positional",
    "aux_ff_dim",
    "aux_num_heads",
    "aux_conv_kernel",
)


def kd_settings(method: str, kd: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``{field: value}`` of :data:`SETTING_FIELDS` for a run of ``method`` with KD options ``kd``."""
    defaults = KdConfig().to_dict()
    kd = kd or {}
    aux = {**defaults["aux"], **(kd.get("aux") or {})}
    settings: Dict[str, Any] = dict.fromkeys(SETTING_FIELDS)
    if method in TEACHER_INPUT_METHODS:
        settings["kd_teacher_input"] = kd.get("teacher_input", defaults["teacher_input"])
    if method == "token":
        settings["kd_temperature"] = kd.get("temperature", defaults["temperature"])
        settings["kd_token_delay"] = kd.get("token_delay", defaults["token_delay"])
    if method == "aux":
        for name in ("type", "attention", "positional", "ff_dim", "num_heads"):
            settings[f"aux_{name}"] = aux[name]
        # The kernel size of a transformer branch is unused: it must not split rows.
        settings["aux_conv_kernel"] = aux["conv_kernel"] if aux["type"] == "conformer" else None
    return settings


def left_chunks_of(role: str, left_chunks: Optional[int]) -> Optional[int]:
    """A student's left context in chunks (-1: all); null for the full-context teacher."""
    if role == "teacher":
        return None
    return DEFAULT_LEFT_CHUNKS if left_chunks is None else left_chunks


def describe_setting(field: str, value: Any) -> str:
    """How a row label shows one setting, e.g. ``attention causal`` or ``left chunks 2``."""
    if field == "left_chunks":
        return "left chunks " + ("all" if int(value) < 0 else str(int(value)))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    names = {
        "kd_teacher_input": "teacher input",
        "kd_temperature": "temperature",
        "kd_token_delay": "delay",
        "aux_type": "branch",
        "aux_attention": "attention",
        "aux_positional": "positions",
        "aux_ff_dim": "branch ff",
        "aux_num_heads": "branch heads",
        "aux_conv_kernel": "branch kernel",
    }
    return f"{names[field]} {value}"
