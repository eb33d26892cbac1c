"""Chunks/second of all-MiniLM-L6-v2 through sentence-transformers (PyTorch, CPU) on a
document's chunks, for `offpath-bench document --python PYTHON`: the same word-piece
windows offpath embeds, framed with [CLS] and [SEP], in batches of 32, mean pooled and
L2 normalised, as sentence-transformers encodes text.

Usage: python document_bench.py MODEL_DIR CHUNKS_JSON
CHUNKS_JSON holds a list of word-piece id lists. Prints one JSON object.
"""

import json
import os
import sys
import time

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

BATCH = 32


def main() -> None:
    model_dir, chunks_path = sys.argv[1], sys.argv[2]
    with open(chunks_path, encoding="utf-8") as f:
        chunks = json.load(f)
    transformer = Transformer(model_dir, max_seq_length=256)
    pooling = Pooling(transformer.get_embedding_dimension(), "mean")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    tokenizer = transformer.tokenizer
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id

    def embed(batch):
        sequences = [[cls] + ids + [sep] for ids in batch]
        width = max(len(s) for s in sequences)
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
        features = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": torch.zeros_like(input_ids),
        }
        with torch.no_grad():
            vectors = model(features)["sentence_embedding"]
        return torch.nn.functional.normalize(vectors, dim=1)

    embed(chunks[:BATCH])  # warm-up
    start = time.perf_counter()
    for k in range(0, len(chunks), BATCH):
        embed(chunks[k : k + BATCH])
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "versions": {
                    "sentence_transformers": sentence_transformers.__version__,
                    "torch": torch.__version__,
                },
                "threads": torch.get_num_threads(),
                "chunks": len(chunks),
                "batch": BATCH,
                "seconds": round(seconds, 2),
                "chunks_per_second": round(len(chunks) / seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
