import sys, pathlib; sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[3]), str(pathlib.Path(__file__).resolve().parent)]  # repo root, this folder
import pickle, sys, numpy as np
from pathlib import Path
from types import SimpleNamespace as NS
from pipeline.training.text import zh_corpus, zh_eval_units, nested_report, FoldResult, uar, CutRule
from zh_charcnn import CONFIGS, cnn_cross_domain
corpus = zh_corpus(Path('/work/shared/data/text')); units = zh_eval_units(corpus); y = corpus.negative
res = dict(pickle.load(open('/tmp/zhcnn/lr_results.pkl','rb')))
LR = 'char123-C4+lex'
cnns = [n for n in sys.argv[1:]]
for n in cnns:
    res.update(cnn_cross_domain(CONFIGS[n], corpus, units, Path('/tmp/zhcnn/cache')))
blends = []
for n in cnns:
    for a in (0.5, 1.0, 2.0):
        bn = f'{LR}+{a:g}*{n}'; blends.append(bn)
        res[bn] = [FoldResult(r.unit, r.n, r.n_negative, r.logits + a*c.logits, uar(y[u[1]], (r.logits + a*c.logits) > 0))
                   for r, c, u in zip(res[LR], res[n], units)]
names = [LR] + cnns + blends
print('raw mean UAR per candidate:')
for n in names: print(f'  {n:40s} {np.mean([r.uar_raw for r in res[n]]):.4f}')
def summ(label, rows):
    print(f'\n== nested: {label}: mean UAR {np.mean([r["uar"] for r in rows]):.4f}  mean recall_neg {np.mean([r["recall_negative"] for r in rows]):.4f}  mean ECE {np.mean([r["ece"] for r in rows]):.4f}')
    for r in rows: print(f'  {r["unit"]:20s} uar {r["uar"]:.4f} rec {r["recall_negative"]:.3f} ece {r["ece"]:.4f} cut {r["cut"]:.2f} {r["chosen"]}')
cand = lambda ns: [NS(name=n) for n in ns]
summ('LR alone', nested_report(cand([LR]), res, corpus, units, CutRule()))
best_cnn = max(cnns, key=lambda n: np.mean([r.uar_raw for r in res[n]]))
summ(f'CNN alone ({best_cnn})', nested_report(cand([best_cnn]), res, corpus, units, CutRule()))
summ('nested choice over all', nested_report(cand(names), res, corpus, units, CutRule()))
