"""The CLIP BPE tokenizer of Stable Diffusion 1.x, rebuilt offline from the BPE file that open_clip ships."""

from __future__ import annotations

import json
import os


def save_clip_tokenizer(folder: str):
    """A real CLIP BPE tokenizer (the 49408-token vocabulary of SD 1.5) built from the BPE file open_clip ships."""
    import gzip
    import importlib.resources

    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    os.makedirs(folder, exist_ok=True)
    bpe_path = importlib.resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # 48894 merges after the header line
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [char + "</w>" for char in byte_chars] + ["".join(merge.split()) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    vocab_file, merges_file = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    with open(vocab_file, "w", encoding="utf-8") as handle:
        json.dump({token: index for index, token in enumerate(vocab)}, handle)
    with open(merges_file, "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(vocab_file, merges_file, model_max_length=77)
    tokenizer.save_pretrained(folder)
    return tokenizer
