"""Helper D experiment: jieba word n-grams next to char 1-3-grams (zh), leave-one-domain-out, nested."""
import sys, time, re, unicodedata, zlib, math, logging
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/main")
from scipy import sparse
from pipeline.training import text as T
from pipeline.text_linear import FeatureSpec, feature_matrix, MAX_CHARS
from pipeline.training.text_cut import CutRule
import jieba
jieba.setLogLevel(logging.WARNING)
DATA = Path("/work/shared/data/text"); CACHE = Path("/work/main/.cache/text")
corpus = T.zh_corpus(DATA); units = T.zh_eval_units(corpus); y = corpus.negative
lex = T.lexicon_feature(corpus.texts, "zh", CACHE)
spec = FeatureSpec(char_orders=(1, 2, 3), word_orders=(), n_buckets=1 << 19, cjk_words=True)
t0 = time.time(); Xc = feature_matrix(corpus.texts, spec); print("char feats", time.time() - t0, flush=True)
_OK = re.compile(r"[\u3400-\u9fff\uf900-\ufaffa-z0-9']+")
def jwords(t):
    t = unicodedata.normalize("NFKC", t[:MAX_CHARS]).lower()
    out = []
    for w in jieba.lcut(t):
        m = _OK.fullmatch(w)
        if m: out.append(re.sub(r"\d+", "0", w))
    return out
def jfeat(texts, nb, orders=(1, 2)):
    indptr, ind, dat = [0], [], []
    for t in texts:
        ws = jwords(t); c = {}
        for n in orders:
            for i in range(len(ws) - n + 1):
                b = zlib.crc32((f"j{n}|" + " ".join(ws[i:i+n])).encode()) & (nb - 1); c[b] = c.get(b, 0) + 1.0
        if c:
            vals = {b: math.log1p(v) for b, v in c.items()}; nr = math.sqrt(sum(v*v for v in vals.values()))
            ind.extend(vals); dat.extend(v / nr for v in vals.values())
        indptr.append(len(ind))
    return sparse.csr_matrix((np.asarray(dat, np.float32), np.asarray(ind, np.int32), np.asarray(indptr)), shape=(len(texts), nb))
t0 = time.time(); Xj = jfeat(corpus.texts, 1 << 18); print("jieba feats", time.time() - t0, flush=True)
col = sparse.csr_matrix(lex.reshape(-1, 1).astype(np.float32))
designs = {
  "char123-C4+lex": (sparse.hstack([Xc, col], format="csr"), 4.0),
  "char123+jieba12-C4+lex": (sparse.hstack([Xc, Xj, col], format="csr"), 4.0),
  "char123+jieba12(x0.7)-C4+lex": (sparse.hstack([Xc, 0.7 * Xj, col], format="csr"), 4.0),
}
results = {}
for name, (X, C) in designs.items():
    rs = []; t0 = time.time()
    for u, test, train in units:
        p = Path(f"/tmp/d/oof-{name}-{u}.npy")
        if p.is_file(): z = np.load(p)
        else:
            clf = T.fit_logistic(X[train], y[train], C); z = clf.decision_function(X[test]); np.save(p, z)
        rs.append(T.FoldResult(u, int(test.sum()), int(y[test].sum()), z, T.uar(y[test], z > 0)))
    results[name] = rs
    print(name, "mean raw UAR %.4f" % np.mean([r.uar_raw for r in rs]), " ".join(f"{r.unit}:{r.uar_raw:.3f}" for r in rs), "%.0fs" % (time.time() - t0), flush=True)
    class C_: pass
cands = [T.Candidate(n, "ngram", spec, 4.0, True) for n in designs]
for sub in ([cands[0]], cands[:2], cands):
    rows = T.nested_report(sub, results, corpus, units, CutRule())
    print("nested over", [c.name for c in sub], "UAR %.4f recall %.4f ECE %.4f" % tuple(np.mean([r[k] for r in rows]) for k in ("uar", "recall_negative", "ece")))
    for r in rows: print("  ", r["unit"], "%.3f %.3f %.3f" % (r["uar"], r["recall_negative"], r["ece"]), r["chosen"])
