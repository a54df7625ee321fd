"""Where Whisper runs: ``[asr] device = "auto" | "cpu" | "cuda"`` and the compute type that goes with it.

A site with GPUs runs Whisper there and keeps everything else (VAD, prosody, emotion, fusion) on CPU.
``auto`` takes the GPU when CTranslate2 sees one and the CPU otherwise; ``cuda`` insists (an error
saying so when there is none, rather than a silent 10x slowdown). The compute type is ``compute_type``
on CPU (int8 by default) and ``compute_type_cuda`` on a GPU (int8_float16: int8 weights, float16
activations, the usual choice for Whisper on NVIDIA cards).
"""
from __future__ import annotations

import logging
from typing import Any

from .errors import ConfigError, ModelUnavailableError

log = logging.getLogger("pipeline.asr")

DEVICES = ("auto", "cpu", "cuda")


def cuda_devices() -> int:
    """How many CUDA devices CTranslate2 can use (0 without a GPU or without a CUDA build)."""
    try:
        import ctranslate2

        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # noqa: BLE001 - any failure to query CUDA means: no usable GPU
        return 0


def resolve_device(options: Any, *, n_cuda: int | None = None) -> tuple[str, str]:
    """(device, compute_type) for ``WhisperModel`` from the [asr] options.

    Raises ConfigError for an unknown device, ModelUnavailableError for ``cuda`` without a GPU.
    """
    device = str(getattr(options, "device", "cpu")).lower()
    if device not in DEVICES:
        raise ConfigError(f"[asr] device = {device!r}; use one of {', '.join(DEVICES)}")
    n = cuda_devices() if n_cuda is None and device != "cpu" else (n_cuda or 0)
    if device == "cuda" and n == 0:
        raise ModelUnavailableError("[asr] device = \"cuda\" but no CUDA device is usable here (CTranslate2 sees "
                                    "none); install the NVIDIA driver and CUDA libraries, or set device = "
                                    "\"auto\" or \"cpu\"")
    if device == "cuda" or (device == "auto" and n > 0):
        return "cuda", str(getattr(options, "compute_type_cuda", "int8_float16"))
    return "cpu", str(getattr(options, "compute_type", "int8"))
