"""callpulse: live caller-agitation and agent-strain analysis for bank call centres.

Public names (see docs/architecture.md)::

    from pipeline import load_config, Engine, CallInfo, analyze_file
"""
__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .errors import (AudioFormatError, ConfigError, ModelUnavailableError, PipelineError,  # noqa: E402
                     StoreError, TapProtocolError)


def __getattr__(name):
    # Heavy stages (models, numba) load on first use so `import pipeline` stays cheap.
    if name in ("Engine", "CallInfo", "CallSession"):
        from . import engine

        return getattr(engine, name)
    if name in ("analyze_file", "analyze_paths"):
        from . import batch

        return getattr(batch, name)
    raise AttributeError(name)


__all__ = ["Config", "load_config", "PipelineError", "AudioFormatError", "ConfigError",
           "ModelUnavailableError", "StoreError", "TapProtocolError", "Engine", "CallInfo", "CallSession",
           "analyze_file", "analyze_paths", "__version__"]
