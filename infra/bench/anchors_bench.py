"""The anchors of `offpath-bench model --python PYTHON`: all-MiniLM-L6-v2 through
sentence-transformers (PyTorch: float32, and CPU autocast to bfloat16), ONNX Runtime
(the ONNX graph exported from the same safetensors at run time, as exported and with
its BERT fusions) and OpenVINO (the same graph, float32 and bfloat16 inference
precision), on the sentences and 256-token windows offpath measures, on all the cores
this process may use. No converted model is downloaded.

Usage: python anchors_bench.py MODEL_DIR INPUTS_JSON SECONDS
INPUTS_JSON holds {"sentences": [...], "windows": [[word piece ids], ...],
"batches": [...], "window_batches": [...]}; a window is framed with [CLS] and [SEP].

Prints one JSON object:
{"versions": {...}, "threads": n,
 "reference": {"sentences": [[...]], "windows": [[...]]},
 "anchors": [{"name", "precision", "throughput": [{"batch", "sentences_per_second"}],
              "windows_256": [{"batch", "chunks_per_second"}],
              "cosine": {"sentences", "windows"}}]}
`reference` is sentence-transformers in float32 (normalised embeddings); `cosine` is
each anchor's lowest cosine to it.
"""

import contextlib
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime
import openvino
import sentence_transformers
import tokenizers
import torch
import transformers
from onnxruntime.transformers.optimizer import optimize_model
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

MAX_TOKENS = 256


def main() -> None:
    model_dir, inputs_path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with open(inputs_path, encoding="utf-8") as f:
        inputs = json.load(f)
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    st = SentenceTransformers(model_dir)
    with tempfile.TemporaryDirectory() as scratch:
        exported = export_onnx(model_dir, scratch)
        fused = fuse(exported, scratch)
        anchors = [
            ("sentence-transformers", "float32", st),
            ("sentence-transformers", "bfloat16", st.autocast()),
            ("ONNX Runtime", "float32", OnnxRuntime(model_dir, exported, threads)),
            ("ONNX Runtime, BERT fusions", "float32", OnnxRuntime(model_dir, fused, threads)),
            ("OpenVINO", "float32", OpenVino(model_dir, exported, threads, "f32")),
            ("OpenVINO", "bfloat16", OpenVino(model_dir, exported, threads, "bf16")),
        ]
        reference = {
            "sentences": st.texts(inputs["sentences"]),
            "windows": st.pieces(inputs["windows"]),
        }
        report = [
            measure(name, precision, anchor, inputs, reference, seconds)
            for name, precision, anchor in anchors
        ]
    print(
        json.dumps(
            {
                "versions": {
                    "sentence_transformers": sentence_transformers.__version__,
                    "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__,
                    "openvino": openvino.__version__,
                },
                "threads": threads,
                "reference": {k: v.round(7).tolist() for k, v in reference.items()},
                "anchors": report,
            }
        )
    )


def measure(name, precision, anchor, inputs, reference, seconds) -> dict:
    """One anchor's rates and its lowest cosine to the reference."""
    print(f"anchors: {name} ({precision})", file=sys.stderr)
    sentences, windows = inputs["sentences"], inputs["windows"]
    cosine = {
        "sentences": lowest_cosine(anchor.texts(sentences), reference["sentences"]),
        "windows": lowest_cosine(anchor.pieces(windows), reference["windows"]),
    }
    return {
        "name": name,
        "precision": precision,
        "throughput": [
            {"batch": b, "sentences_per_second": rate(anchor.texts, sentences, b, seconds)}
            for b in inputs["batches"]
        ],
        "windows_256": [
            {"batch": b, "chunks_per_second": rate(anchor.pieces, windows, b, seconds)}
            for b in inputs["window_batches"]
        ],
        "cosine": cosine,
    }


def rate(embed, items: list, batch: int, seconds: float) -> float:
    """Items/second embedding batches of `batch` for `seconds`, over consecutive batches
    that walk the items whole, as `offpath-bench model` does."""
    batches = [
        [items[(k * batch + i) % len(items)] for i in range(batch)]
        for k in range(math.ceil(len(items) / batch))
    ]
    embed(batches[0])  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        embed(batches[(count // batch) % len(batches)])
        count += batch
    return round(count / (time.perf_counter() - start), 1)


def lowest_cosine(embeddings: np.ndarray, reference: np.ndarray) -> float:
    """The lowest cosine between matching rows (both normalised)."""
    return round(float(np.min(np.sum(embeddings * reference, axis=1))), 7)


def normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of each sequence's token states under its attention mask, normalised."""
    mask = mask[..., None].astype(np.float32)
    return normalised((hidden * mask).sum(axis=1) / mask.sum(axis=1))


class SentenceTransformers:
    """The pipeline all-MiniLM-L6-v2 declares (the PyPI copy has no module config):
    256-token transformer, mean pooling, normalised by encode()."""

    def __init__(self, model_dir: str):
        transformer = Transformer(model_dir, max_seq_length=MAX_TOKENS)
        pooling = Pooling(transformer.get_embedding_dimension(), "mean")
        self.model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
        self.precision = contextlib.nullcontext

    def autocast(self) -> "SentenceTransformers":
        """The same model under CPU autocast to bfloat16."""
        other = object.__new__(SentenceTransformers)
        other.model = self.model
        other.precision = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
        return other

    def texts(self, texts: list) -> np.ndarray:
        with self.precision():
            return self.model.encode(
                texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True
            ).astype(np.float32)

    def pieces(self, windows: list) -> np.ndarray:
        tokenizer = self.model.tokenizer
        ids, mask, types = framed(windows, tokenizer.cls_token_id, tokenizer.sep_token_id)
        bert = self.model[0].auto_model
        with self.precision(), torch.inference_mode():
            hidden = bert(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                token_type_ids=torch.from_numpy(types),
            ).last_hidden_state
        return mean_pool(hidden.float().numpy(), mask)


def framed(windows: list, cls: int, sep: int) -> tuple:
    """Windows of word pieces as [CLS] pieces [SEP], with masks and token types."""
    ids = np.array([[cls, *w, sep] for w in windows], dtype=np.int64)
    return ids, np.ones_like(ids), np.zeros_like(ids)


def export_onnx(model_dir: str, scratch: str) -> str:
    """The BERT encoder of the checkpoint as ONNX (last hidden state, dynamic batch and
    length), exported by PyTorch from the same safetensors."""
    # Eager attention: the graph pattern ONNX Runtime's BERT fusions recognise.
    bert = transformers.AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    model = LastHiddenState(bert).eval()
    path = os.path.join(scratch, "model.onnx")
    sample = torch.ones((2, 16), dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    with torch.inference_mode():
        torch.onnx.export(
            model,
            (sample, sample, torch.zeros_like(sample)),
            path,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "last_hidden_state": axes,
            },
            opset_version=17,
            dynamo=False,
        )
    return path


class LastHiddenState(torch.nn.Module):
    """The encoder's last hidden state from its three inputs, by name."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state


def fuse(path: str, scratch: str) -> str:
    """ONNX Runtime's transformer optimizer over the exported graph: attention, layer
    norm, GELU and bias fusions for BERT (12 heads, hidden size 384)."""
    optimized = optimize_model(path, model_type="bert", num_heads=12, hidden_size=384)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    print(f"anchors: ONNX Runtime fusions {fused}", file=sys.stderr)
    out = os.path.join(scratch, "model-fused.onnx")
    optimized.save_model_to_file(out)
    return out


class Tokenized:
    """The checkpoint's tokenizer as the ONNX runtimes use it: truncation at 256,
    padding to the batch's longest."""

    def __init__(self, model_dir: str):
        self.tokenizer = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()
        self.cls = self.tokenizer.token_to_id("[CLS]")
        self.sep = self.tokenizer.token_to_id("[SEP]")

    def texts(self, texts: list) -> tuple:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask, np.zeros_like(ids)

    def pieces(self, windows: list) -> tuple:
        return framed(windows, self.cls, self.sep)


class OnnxGraph:
    """A runtime of the exported graph: tokenised as `Tokenized` says, run by
    `self.run`, mean pooled and normalised."""

    def run(self, ids, mask, types) -> np.ndarray:
        raise NotImplementedError

    def texts(self, texts: list) -> np.ndarray:
        return self.run(*self.tokenized.texts(texts))

    def pieces(self, windows: list) -> np.ndarray:
        return self.run(*self.tokenized.pieces(windows))


class OnnxRuntime(OnnxGraph):
    """An ONNX Runtime CPU session over `path`, with all its graph optimisations."""

    def __init__(self, model_dir: str, path: str, threads: int):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )
        self.tokenized = Tokenized(model_dir)

    def run(self, ids, mask, types) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        return mean_pool(hidden, mask)


class OpenVino(OnnxGraph):
    """OpenVINO's CPU plugin over the ONNX graph, at inference precision `hint`."""

    def __init__(self, model_dir: str, path: str, threads: int, hint: str):
        core = openvino.Core()
        self.compiled = core.compile_model(
            path,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": hint,
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        self.tokenized = Tokenized(model_dir)

    def run(self, ids, mask, types) -> np.ndarray:
        hidden = self.compiled([ids, mask, types])[0]
        return mean_pool(hidden, mask)


if __name__ == "__main__":
    main()
