"""Text stage, ``transformers`` backend: any local sequence-classification model folder (a bank's own
fine-tuned model), its class probabilities mapped to a sentiment in [-1, 1] through the labels' meaning.

torch and transformers are imported only when this backend is chosen.
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Mapping, Protocol, Sequence

from .errors import ModelUnavailableError

log = logging.getLogger("pipeline.text")


class TransformersOptions(Protocol):
    """What the backend reads of ``TextOptions`` (kept as a protocol so this module needs no import of it)."""

    model_path: str
    max_tokens: int
    torch_threads: int
    label_values: Sequence[float]


def label_values_from_id2label(id2label: Mapping[int, str]) -> tuple[float, ...]:
    """Sentiment value in [-1, 1] of each class, from the model's label names.

    Understands negative/neutral/positive names (any case, abbreviations such as "neg", "very negative"
    as -1 with plain "negative" then -0.5), star ratings
    ("1 star" .. "5 stars"), and generic ``LABEL_i`` with 2 (neg, pos), 3 (neg, neu, pos) or 5 (stars)
    classes. Anything else raises ModelUnavailableError naming the ``[text] label_values`` option.
    """
    n = len(id2label)
    names = [str(id2label[i]).strip().lower() for i in range(n)]
    stars = [re.fullmatch(r"(\d+)\s*stars?", name) for name in names]
    if n >= 2 and all(stars):
        counts = [int(m.group(1)) for m in stars]  # type: ignore[union-attr]
        lo, hi = min(counts), max(counts)
        if hi > lo:
            return tuple(2.0 * (c - lo) / (hi - lo) - 1.0 for c in counts)
    # "very negative" / "negative" / ... (SST-5 style): plain polar labels sit half-way when strong ones exist.
    strong = re.compile(r"\b(very|strongly|extremely)\b")
    plain = 0.5 if any(strong.search(name) for name in names) else 1.0
    polar: list[float | None] = []
    for name in names:
        size = 1.0 if strong.search(name) else plain
        if "neg" in name:
            polar.append(-size)
        elif "neu" in name:
            polar.append(0.0)
        elif "pos" in name:
            polar.append(size)
        else:
            polar.append(None)
    if n >= 2 and all(v is not None for v in polar):
        return tuple(polar)  # type: ignore[arg-type]
    if all(re.fullmatch(r"label_\d+", name) for name in names) and n in (2, 3, 5):
        return tuple(2.0 * i / (n - 1) - 1.0 for i in range(n))
    raise ModelUnavailableError(
        f"cannot tell the sentiment meaning of the model's labels {names}; set [text] label_values to one "
        "number in [-1, 1] per class id (e.g. [-1.0, 0.0, 1.0]), or give the model's config.json an "
        "id2label with negative/neutral/positive names"
    )


class TransformersSentiment:
    """A local sequence-classification model; a lock serialises calls (fast tokenizers are not re-entrant)."""

    def __init__(self, options: TransformersOptions) -> None:
        folder = Path(options.model_path).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelUnavailableError(
                f"[text] model_path {str(folder)!r} holds no config.json; put a sequence-classification "
                "model saved with save_pretrained() there (config.json, tokenizer files, model.safetensors "
                "or pytorch_model.bin), or set [text] backend = \"lexicon\""
            )
        try:
            import torch  # noqa: F401  (imported lazily: only this backend needs torch)
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:
            raise ModelUnavailableError(
                f"backend 'transformers' needs torch and transformers installed ({exc}); "
                "pip install torch==2.13.0 transformers, or set [text] backend = \"lexicon\""
            ) from exc
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), local_files_only=True
            )
        except Exception as exc:  # noqa: BLE001 - transformers/safetensors raise many types; all mean "unusable"
            raise ModelUnavailableError(
                f"cannot load a sequence-classification model from {folder}: {exc}; the folder needs "
                "config.json, tokenizer files and weights written by save_pretrained()"
            ) from exc
        self._model.eval()
        self._torch = torch
        # torch's thread count is process-wide, so it is set once here rather than on every call.
        torch.set_num_threads(options.torch_threads)
        self._max_tokens = options.max_tokens
        n_labels = int(self._model.config.num_labels)
        if options.label_values:
            if len(options.label_values) != n_labels:
                raise ModelUnavailableError(
                    f"[text] label_values has {len(options.label_values)} numbers but the model in "
                    f"{folder} has {n_labels} classes; give one number per class id"
                )
            self.values = tuple(float(v) for v in options.label_values)
        else:
            id2label = {int(k): v for k, v in self._model.config.id2label.items()}
            self.values = label_values_from_id2label(id2label)
        self._lock = threading.Lock()
        log.info("text: loaded transformers model %s, class values %s", folder, self.values)

    def sentiment(self, text: str) -> float:
        torch = self._torch
        with self._lock:
            inputs = self._tokenizer(
                text, truncation=True, max_length=self._max_tokens, return_tensors="pt"
            )
            with torch.inference_mode():
                logits = self._model(**inputs).logits[0]
            probs = torch.softmax(logits.float(), dim=-1).tolist()
        return float(sum(p * v for p, v in zip(probs, self.values)))
