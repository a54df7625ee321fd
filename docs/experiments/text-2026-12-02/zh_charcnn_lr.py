import sys, pathlib; sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[3]), str(pathlib.Path(__file__).resolve().parent)]  # repo root, this folder
import logging, time, pickle
from pathlib import Path
import numpy as np
from pipeline.training.text import zh_corpus, zh_eval_units, cross_domain, zh_candidates, lexicon_feature
from pipeline.text_linear import feature_matrix
logging.basicConfig(level=logging.INFO)
corpus = zh_corpus(Path('/work/shared/data/text'))
units = zh_eval_units(corpus)
cand = [c for c in zh_candidates() if c.name == 'char123-C4+lex']
cache = Path('/tmp/zhcnn/lrcache')
lex = lexicon_feature(corpus.texts, 'zh', cache)
res = cross_domain(cand, corpus, units, lambda c: feature_matrix(corpus.texts, c.spec), lex, cache)
pickle.dump(res, open('/tmp/zhcnn/lr_results.pkl', 'wb'))
print({r.unit: round(r.uar_raw, 4) for r in res[cand[0].name]})
