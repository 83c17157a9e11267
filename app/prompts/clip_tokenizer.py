"""The exact tokenizer of Stable Diffusion 1.5's text encoder (OpenAI CLIP BPE), built offline.

SD-1.5 tokenizes with ``transformers.CLIPTokenizer`` over OpenAI CLIP's BPE (vocab 49408). Instead of
downloading ``openai/clip-vit-large-patch14`` from the hub we rebuild its ``vocab.json`` / ``merges.txt``
from OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (see SOURCES.md) exactly the way CLIP's own
``SimpleTokenizer`` derives its vocabulary (github.com/openai/CLIP, clip/simple_tokenizer.py), then let
transformers do the tokenizing, so the count is the one the pipeline sees.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from functools import lru_cache
from pathlib import Path

from app.prompts import CLIP_BPE_PATH

# CLIP's SimpleTokenizer keeps merges[1 : 49152 - 256 - 2 + 1]: 48894 merges; with 2 x 256 byte symbols and
# the two special tokens that is the 49408-entry vocabulary of the SD-1.5 text encoder.
N_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode map (same algorithm as CLIP's simple_tokenizer.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def read_merges(bpe_path: Path = CLIP_BPE_PATH) -> list[str]:
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    return lines[1 : N_MERGES + 1]


def write_tokenizer_files(folder: Path, bpe_path: Path = CLIP_BPE_PATH) -> None:
    """Write ``vocab.json`` and ``merges.txt`` in the layout of the hub's CLIP tokenizer."""
    merges = read_merges(bpe_path)
    byte_symbols = list(bytes_to_unicode().values())
    vocab = byte_symbols + [s + "</w>" for s in byte_symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += [BOS, EOS]
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"CLIP vocabulary has {len(vocab)} entries, expected {VOCAB_SIZE}: {bpe_path} is not "
                           "OpenAI's bpe_simple_vocab_16e6.txt.gz")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


@lru_cache(maxsize=1)
def get_clip_tokenizer():
    """A ``transformers.CLIPTokenizer`` identical to SD-1.5's, built once per process (about a second)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="blindpair-clip-") as tmp:
        write_tokenizer_files(Path(tmp))
        # Everything is read into memory here, so the folder can go afterwards.
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=77)


def count_tokens(text: str) -> int:
    """Token count including the BOS and EOS tokens the text encoder adds (no truncation)."""
    return len(get_clip_tokenizer()(text, truncation=False)["input_ids"])
