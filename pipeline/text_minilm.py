"""Sentence embeddings for the English trained text scorer: all-MiniLM-L6-v2, int8 ONNX, onnxruntime.

``models/text/minilm_en_int8.onnx`` (written by ``scripts/export_minilm.py``) is the encoder alone; this
module tokenises (``tokenizers``, from ``minilm_en_tokenizer.json``), runs it one turn at a time on one
thread, and mean-pools and L2-normalises the token states: a 384-dimensional unit vector per turn. The
same function embeds the training texts (``pipeline/training/text.py``), so the logistic head is fitted on
exactly the vectors it scores at run time (dynamic int8 quantises activations per run: a padded batch of
32 gives slightly different vectors than a batch of one, so training embeds one text per run too).

``MiniLMEmbedder.load(folder)`` once per process; ``embed()`` keeps no state between calls and may be
called from several threads (an onnxruntime session's ``run`` is thread-safe).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelUnavailableError

log = logging.getLogger("pipeline.text_minilm")

ONNX_NAME = "minilm_en_int8.onnx"
TOKENIZER_NAME = "minilm_en_tokenizer.json"
REFERENCE_NAME = "minilm_en_reference.npz"
DIM = 384
# The model was trained with 128-token inputs (its tokenizer.json truncates there too); a longer turn is
# read up to here, which also bounds the cost of a 10,000-character turn.
MAX_TOKENS = 128
# Characters handed to the tokenizer: 128 word pieces rarely need more than ~700, so tokenising the rest
# of a 10,000-character turn would only cost time (the n-gram model reads the same 2,000).
MAX_CHARS = 2000

_REBUILD = ("rebuild it with `python scripts/export_minilm.py` (needs the train extra) and retrain with "
            "`python scripts/train_text.py --languages en`, or set [text] backend = \"lexicon\"")


@dataclass(frozen=True)
class MiniLMEmbedder:
    """Turn text -> (384,) float32 unit vector. Built by :meth:`load`; holds no per-call state."""

    session: object          # onnxruntime.InferenceSession, one intra-op thread, sequential
    tokenizer: object        # tokenizers.Tokenizer, truncation at MAX_TOKENS, no padding
    path: Path

    @classmethod
    def load(cls, folder: Path, *, onnx_name: str = ONNX_NAME, tokenizer_name: str = TOKENIZER_NAME,
             threads: int = 1) -> "MiniLMEmbedder":
        onnx_path, tok_path = Path(folder) / onnx_name, Path(folder) / tokenizer_name
        for p in (onnx_path, tok_path):
            if not p.is_file():
                raise ModelUnavailableError(f"MiniLM file {p} is missing; {_REBUILD}")
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ModelUnavailableError(f"the English trained text model needs onnxruntime and tokenizers "
                                        f"({exc}): pip install -e . ; or set [text] backend = \"lexicon\"") from exc
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
            raise ModelUnavailableError(f"cannot read the tokenizer {tok_path}: {exc}; {_REBUILD}") from exc
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.no_padding()  # the file pads to 128; one turn a run needs no padding at all
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own (InvalidProtobuf, Fail, ...) classes
            raise ModelUnavailableError(f"cannot load the MiniLM model {onnx_path}: {exc}; {_REBUILD}") from exc
        names = sorted(i.name for i in session.get_inputs())
        if names != ["attention_mask", "input_ids"]:
            raise ModelUnavailableError(f"{onnx_path} takes inputs {names}, expected input_ids and "
                                        f"attention_mask; {_REBUILD}")
        emb = cls(session, tokenizer, onnx_path)
        if emb.embed("ok").shape != (DIM,):
            raise ModelUnavailableError(f"{onnx_path} does not give {DIM}-dimensional states; {_REBUILD}")
        log.info("text: MiniLM int8 embedder ready (%s)", onnx_path)
        return emb

    def embed(self, text: str) -> np.ndarray:
        """Mean-pooled, L2-normalised token states of one text (empty text: the [CLS] [SEP] states)."""
        enc = self.tokenizer.encode(text[:MAX_CHARS])
        ids = np.asarray([enc.ids], dtype=np.int64)
        mask = np.ones_like(ids)
        h = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0][0]  # (tokens, 384)
        # Batch of one, no padding: every token counts, so the masked mean is the plain mean.
        e = h.mean(axis=0, dtype=np.float64)
        norm = float(np.linalg.norm(e))
        return (e / norm if norm > 0 else e).astype(np.float32)

    def embed_many(self, texts) -> np.ndarray:
        """(n, 384) float32: :meth:`embed` one text at a time (training uses this; batch 1 on purpose)."""
        out = np.zeros((len(texts), DIM), np.float32)
        for i, t in enumerate(texts):
            out[i] = self.embed(t)
        return out
