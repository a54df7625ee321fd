"""[asr] device: Whisper on a GPU when there is one (auto), on CPU otherwise, and a clear error when a
GPU is demanded and absent. This machine has no GPU, so the CUDA branch is tested with the device count
given explicitly; tests/test_asr.py covers the real model on CPU."""
from __future__ import annotations

import pytest

from pipeline.asr import AsrOptions
from pipeline.asr_device import cuda_devices, resolve_device
from pipeline.config import load_config
from pipeline.errors import ConfigError, ModelUnavailableError


def test_auto_takes_the_gpu_with_its_compute_type_when_there_is_one():
    options = AsrOptions(device="auto")
    assert resolve_device(options, n_cuda=1) == ("cuda", "int8_float16")
    assert resolve_device(options, n_cuda=0) == ("cpu", "int8")


def test_cpu_stays_on_cpu_even_with_a_gpu():
    assert resolve_device(AsrOptions(device="cpu", compute_type="int8_float32"), n_cuda=2) == ("cpu", "int8_float32")


def test_cuda_without_a_gpu_is_an_error_saying_what_to_do():
    with pytest.raises(ModelUnavailableError, match="no CUDA device"):
        resolve_device(AsrOptions(device="cuda"), n_cuda=0)
    assert resolve_device(AsrOptions(device="cuda", compute_type_cuda="float16"), n_cuda=1) == ("cuda", "float16")


def test_an_unknown_device_is_a_config_error():
    with pytest.raises(ConfigError, match="auto, cpu, cuda"):
        resolve_device(AsrOptions(device="tpu"), n_cuda=0)


def test_the_shipped_config_says_auto_and_this_machine_resolves_it():
    options = load_config().asr
    assert options.device == "auto" and options.compute_type_cuda == "int8_float16"
    device, _ = resolve_device(options)
    assert device == ("cuda" if cuda_devices() > 0 else "cpu")
