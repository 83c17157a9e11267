"""Prompt data: the built-in suite and the CLIP BPE merges the token counter is built from."""

from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent
SUITE_PATH = PROMPTS_DIR / "suite.jsonl"
CLIP_BPE_PATH = PROMPTS_DIR / "bpe_simple_vocab_16e6.txt.gz"
