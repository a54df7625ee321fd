"""onnxruntime alone, one thread, on four probe turns: each ONNX file given, interleaved (60 rounds).

    python docs/experiments/text-2026-12-02/minilm_depth_ort_time.py DIR2/minilm_en_int8.onnx DIR6/minilm_en_int8.onnx ...

DIRn: `python scripts/export_minilm.py --out DIRn --layers n` (round 5 of models/text/README.md)."""
import sys, time, statistics, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
tok = Tokenizer.from_file("models/text/minilm_en_tokenizer.json"); tok.no_padding()
def sess(p):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL; so.log_severity_level = 3
    return ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
paths = sys.argv[1:]
S = {p: sess(p) for p in paths}
texts = ["this is the third time ive called", "thank you so much that was really helpful", "I want to speak to your manager",
         "i have been on hold for an hour and nobody can tell me where my card is and i am really fed up with this bank now"]
res = {p: [] for p in paths}
for r in range(60):
    for t in texts:
        ids = np.asarray([tok.encode(t).ids], np.int64); m = np.ones_like(ids)
        for p in paths:
            c0 = time.thread_time(); S[p].run(None, {"input_ids": ids, "attention_mask": m}); res[p].append((time.thread_time()-c0)*1000)
ref = None
for p in paths:
    ids = np.asarray([tok.encode(texts[0]).ids], np.int64)
    h = S[p].run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0].mean(0); h /= np.linalg.norm(h)
    if ref is None: ref = h
    print(f"{p:28s} median {statistics.median(res[p]):.3f} ms  p90 {sorted(res[p])[int(.9*len(res[p]))]:.3f}  cos-to-first {float(h@ref):.4f}")
