"""Typed exceptions: each says what was wrong and what to do about it."""
from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error callpulse raises on purpose."""


class ConfigError(PipelineError):
    """A config file or option is invalid (unknown key, wrong type, out of range)."""


class AudioFormatError(PipelineError):
    """An audio file or stream cannot be used (unreadable, empty, wrong channel count...)."""


class ModelUnavailableError(PipelineError):
    """A model's files are missing or unreadable; the message says how to get them."""


class TapProtocolError(PipelineError):
    """A live tap sent bytes that break its wire format (the frame is dropped, not the call)."""


class StoreError(PipelineError):
    """The results database cannot be opened or written."""


class DatasetError(PipelineError):
    """A labelled dataset file (for measuring or evaluating) is missing or malformed."""


class EvaluationError(PipelineError):
    """An evaluation cannot run: a manifest or suite file is missing, malformed or points at missing
    files, or a labelled item cannot be scored. The message names the file, row and what to fix."""


class SampleGenerationError(PipelineError):
    """A sample call could not be synthesised (espeak-ng missing or failing); says what to install."""
