"""Experiment (not shipped): a small char-CNN for Mandarin text sentiment, measured leave-one-domain-out
against / blended with the hashed n-gram LR (``pipeline/training/text.py``).

Text is read as the run-time scorer reads it: NFKC, Traditional -> Simplified (zhconv, as
``TextScorer._views``), then ``pipeline.text_linear.tokens`` (CJK characters one by one, Latin words,
digit runs as ``0``). Each fold's vocabulary comes from its training rows only (min count 2, else UNK);
fixed epochs, nothing is chosen on the left-out unit. Deterministic (seeded, one thread).

Run from the repo root: ``python docs/experiments/text-2026-12-02/zh_charcnn.py --out /tmp/zhcnn`` (caches each
unit's logits); ``zh_charcnn_report.py`` then gives the nested table.
"""
from __future__ import annotations

import sys

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[3]))

import argparse
import hashlib
import json
import logging
import pickle
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.text_linear import tokens
from pipeline.training.text import FoldResult, uar, zh_corpus, zh_eval_units

log = logging.getLogger("experiments.zh_charcnn")
PAD, UNK = 0, 1


@dataclass(frozen=True)
class CnnConfig:
    name: str = "cnn64-k234x96"
    emb: int = 64
    widths: tuple[int, ...] = (2, 3, 4)
    filters: int = 96
    dropout: float = 0.4
    epochs: int = 3
    max_len: int = 160
    batch: int = 64
    lr: float = 2e-3
    min_count: int = 2
    seed: int = 0


def normalise(text: str) -> list[str]:
    """The run-time view of a Mandarin turn as tokens (NFKC, Simplified, ``tokens``)."""
    import zhconv

    return tokens(zhconv.convert(unicodedata.normalize("NFKC", text), "zh-cn"))


def corpus_tokens(texts: list[str], cache_dir: Path) -> list[list[str]]:
    key = hashlib.sha1("\x00".join(texts).encode("utf-8")).hexdigest()[:16]
    path = cache_dir / f"tokens-{key}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())
    toks = [normalise(t) for t in texts]
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(toks))
    return toks


def build_vocab(toks: list[list[str]], rows: np.ndarray, min_count: int) -> dict[str, int]:
    c = Counter()
    for i in np.flatnonzero(rows):
        c.update(toks[i])
    kept = sorted(t for t, n in c.items() if n >= min_count)
    return {t: k + 2 for k, t in enumerate(kept)}


def encode(toks: list[list[str]], idx: np.ndarray, vocab: dict[str, int], max_len: int) -> list[np.ndarray]:
    out = []
    for i in idx:
        ids = [vocab.get(t, UNK) for t in toks[i][:max_len]] or [UNK]
        out.append(np.asarray(ids, np.int64))
    return out


def make_model(cfg: CnnConfig, vocab_size: int):
    import torch
    from torch import nn

    class CharCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab_size, cfg.emb, padding_idx=PAD)
            self.convs = nn.ModuleList(nn.Conv1d(cfg.emb, cfg.filters, k) for k in cfg.widths)
            self.drop = nn.Dropout(cfg.dropout)
            self.out = nn.Linear(cfg.filters * len(cfg.widths), 1)
            self.min_len = max(cfg.widths)

        def forward(self, ids):  # (B, T) int64, PAD = 0; T >= max width
            if ids.shape[1] < self.min_len:
                ids = nn.functional.pad(ids, (0, self.min_len - ids.shape[1]))
            x = self.emb(ids).transpose(1, 2)            # (B, E, T)
            valid = (ids != PAD)
            pooled = []
            for conv in self.convs:
                h = torch.relu(conv(x))                   # (B, F, T-k+1)
                k = conv.kernel_size[0]
                # Windows that start on a real token (a short turn's one window may run into padding).
                m = valid[:, : h.shape[2]].unsqueeze(1)
                pooled.append(h.masked_fill(~m, 0.0).amax(dim=2))
            return self.out(self.drop(torch.cat(pooled, 1))).squeeze(1)

    return CharCNN()


def _pad(seqs: list[np.ndarray]):
    import torch

    T = max(len(s) for s in seqs)
    a = np.zeros((len(seqs), T), np.int64)
    for j, s in enumerate(seqs):
        a[j, : len(s)] = s
    return torch.from_numpy(a)


def _batches(lengths: np.ndarray, batch: int, rng: np.random.RandomState | None) -> list[np.ndarray]:
    """Batches of similar length (less padding): shuffled chunks of 50 batches sorted by length."""
    order = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    out = []
    chunk = batch * 50
    for s in range(0, len(order), chunk):
        part = order[s : s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        out.extend(part[k : k + batch] for k in range(0, len(part), batch))
    if rng is not None:
        out = [out[k] for k in rng.permutation(len(out))]
    return out


def train_fold(cfg: CnnConfig, toks: list[list[str]], y: np.ndarray, train: np.ndarray):
    import torch

    torch.manual_seed(cfg.seed)
    rng = np.random.RandomState(cfg.seed)
    vocab = build_vocab(toks, train, cfg.min_count)
    idx = np.flatnonzero(train)
    seqs = encode(toks, idx, vocab, cfg.max_len)
    yt = y[idx].astype(np.float32)
    lengths = np.asarray([len(s) for s in seqs])
    model = make_model(cfg, len(vocab) + 2)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n_pos = float(yt.sum())
    w_pos, w_neg = len(yt) / (2 * n_pos), len(yt) / (2 * (len(yt) - n_pos))
    model.train()
    for ep in range(cfg.epochs):
        t0, tot = time.perf_counter(), 0.0
        for b in _batches(lengths, cfg.batch, rng):
            ids = _pad([seqs[j] for j in b])
            target = torch.from_numpy(yt[b])
            weight = target * w_pos + (1 - target) * w_neg
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(ids), target, weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss) * len(b)
        log.info("epoch %d: loss %.4f (%.0f s)", ep + 1, tot / len(yt), time.perf_counter() - t0)
    model.eval()
    return model, vocab


def score(model, vocab, toks: list[list[str]], idx: np.ndarray, max_len: int) -> np.ndarray:
    import torch

    seqs = encode(toks, idx, vocab, max_len)
    lengths = np.asarray([len(s) for s in seqs])
    z = np.zeros(len(seqs), np.float64)
    with torch.no_grad():
        for b in _batches(lengths, 256, None):
            z[b] = model(_pad([seqs[j] for j in b])).numpy()
    return z


def cnn_cross_domain(cfg: CnnConfig, corpus, units, cache_dir: Path, only: set[str] | None = None
                     ) -> dict[str, list[FoldResult]]:
    """Out-of-domain logits of ``cfg`` on every unit (one model per distinct training set), cached."""
    import torch

    torch.set_num_threads(1)
    y = corpus.negative
    toks = corpus_tokens(corpus.texts, cache_dir)
    data_key = hashlib.sha1(("\x00".join(corpus.texts) + y.tobytes().hex() + "|".join(corpus.fold))
                            .encode("utf-8")).hexdigest()[:12]
    cfg_key = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    results, models = [], {}
    for name, test, train in units:
        if only is not None and name not in only:
            continue
        path = cache_dir / f"cnn-{cfg_key}-{data_key}-{hashlib.sha1(name.encode()).hexdigest()[:8]}.npy"
        if path.is_file():
            z = np.load(path)
        else:
            tkey = train.tobytes()
            if tkey not in models:
                t0 = time.perf_counter()
                models[tkey] = train_fold(cfg, toks, y, train)
                log.info("%s %s: trained in %.0f s", cfg.name, name, time.perf_counter() - t0)
            z = score(*models[tkey], toks, np.flatnonzero(test), cfg.max_len)
            cache_dir.mkdir(parents=True, exist_ok=True)
            np.save(path, z)
        results.append(FoldResult(name, int(test.sum()), int(y[test].sum()), z, uar(y[test], z > 0)))
        log.info("%s %s: raw UAR %.4f", cfg.name, name, results[-1].uar_raw)
    return {cfg.name: results}


CONFIGS = {c.name: c for c in (
    CnnConfig(),
    CnnConfig(name="cnn64-k234x128-e4", filters=128, epochs=4),
)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/text"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/zhcnn/cache"))
    ap.add_argument("--config", default="cnn64-k234x96")
    ap.add_argument("--units", default="", help="comma-separated units (default all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    corpus = zh_corpus(args.data)
    units = zh_eval_units(corpus)
    only = set(args.units.split(",")) if args.units else None
    res = cnn_cross_domain(CONFIGS[args.config], corpus, units, args.cache, only)
    for r in next(iter(res.values())):
        print(r.unit, r.n, round(r.uar_raw, 4))


if __name__ == "__main__":
    main()
