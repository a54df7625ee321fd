"""Scripted offline evaluation (``callpulse evaluate``): metrics, evaluation calls, runner and reports.

See docs/evaluation.md. Each evaluation is one module with one options dataclass and one function.
"""
from .alerts import AlertEvalOptions, evaluate_alerts
from .asr import AsrEvalOptions, evaluate_asr
from .calls import CallBuildOptions, build_calls
from .emotion import EmotionEvalOptions, evaluate_emotion
from .runner import RunOptions
from .suite import SuiteOptions, load_eval_config
from .text import TextEvalOptions, evaluate_text

__all__ = ["AlertEvalOptions", "AsrEvalOptions", "CallBuildOptions", "EmotionEvalOptions", "RunOptions",
           "SuiteOptions", "TextEvalOptions", "build_calls", "evaluate_alerts", "evaluate_asr",
           "evaluate_emotion", "evaluate_text", "load_eval_config"]
