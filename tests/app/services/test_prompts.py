"""Prompt suite, exact CLIP token counts, CSV/JSONL imports refused whole, adding prompts to a study."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache

import pytest
import regex
from sqlalchemy import func, select

from app.models import Prompt
from app.prompts import CLIP_BPE_PATH, SUITE_PATH
from app.prompts.clip_tokenizer import bytes_to_unicode
from app.services.prompts import (
    MAX_CLIP_TOKENS,
    PromptError,
    PromptFileError,
    PromptSpec,
    add_prompts,
    count_clip_tokens,
    list_themes,
    load_builtin_suite,
    parse_prompt_file,
)
from tests.factories import make_study

# --- an independent re-implementation of OpenAI CLIP's SimpleTokenizer (clip/simple_tokenizer.py) -----------
# It reads the same BPE file but shares no code with app.prompts.clip_tokenizer or transformers, so the two
# counts agreeing on every suite prompt checks the vocab/merges conversion, not just that the code runs.


@lru_cache(maxsize=1)
def _reference():
    merges = gzip.open(CLIP_BPE_PATH).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    encoder = {v: i for i, v in enumerate(vocab)}
    pat = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )
    return ranks, encoder, pat


def _bpe(token: str, ranks) -> list[str]:
    word = list(token[:-1]) + [token[-1] + "</w>"]
    while len(word) > 1:
        pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                merged.append(word[i] + word[i + 1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


def reference_ids(text: str) -> list[int]:
    ranks, encoder, pat = _reference()
    byte_encoder = bytes_to_unicode()
    text = " ".join(text.split()).strip().lower()
    ids = [encoder["<|startoftext|>"]]
    for token in pat.findall(text):
        token = "".join(byte_encoder[b] for b in token.encode("utf-8"))
        ids.extend(encoder[t] for t in _bpe(token, ranks))
    return ids + [encoder["<|endoftext|>"]]


# --- token counting --------------------------------------------------------------------------------------


def test_known_clip_token_ids():
    from app.prompts.clip_tokenizer import get_clip_tokenizer

    # The widely quoted CLIP encoding of "a photo of a cat": BOS, a, photo, of, a, cat, EOS.
    assert get_clip_tokenizer()("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert count_clip_tokens("a photo of a cat") == 7
    assert count_clip_tokens("") == 2
    assert len(get_clip_tokenizer()) == 49408


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello world", 4),
        ("A  Photo of a CAT!!", 8),  # case and spacing do not matter; '!!' is one token
        ("1969", 6),  # CLIP splits numbers into single digits
        ("antidisestablishmentarianism", 8),  # anti|dise|stab|lish|ment|arianism
        ("a chameleon's tongue", 6),  # 's is its own token
    ],
)
def test_counts_match_hand_worked_examples(text, expected):
    assert count_clip_tokens(text) == expected
    assert len(reference_ids(text)) == expected


def test_counts_match_reference_simple_tokenizer_on_the_whole_suite():
    from app.prompts.clip_tokenizer import get_clip_tokenizer

    tok = get_clip_tokenizer()
    for spec in load_builtin_suite():
        assert tok(spec.text)["input_ids"] == reference_ids(spec.text), spec.external_id


# --- the built-in suite ----------------------------------------------------------------------------------


def test_builtin_suite_is_complete_and_fits_clip():
    suite = load_builtin_suite()
    assert len(suite) == 100
    assert len({s.external_id for s in suite}) == 100
    themes = list_themes(suite)
    assert len(themes) >= 10
    for required in ("urban exploration", "historical moments", "underwater worlds", "sports", "nature",
                     "wildlife", "abstract concepts", "magical seasons", "mystical realms"):
        assert themes.get(required, 0) >= 5, required
    by_detail = {d: [count_clip_tokens(s.text) for s in suite if s.detail == d] for d in ("short", "medium", "long")}
    assert all(len(v) >= 20 for v in by_detail.values())
    # A real spread: every long prompt is longer than every short one, and all fit the 77-token window.
    assert max(by_detail["short"]) < min(by_detail["medium"]) <= max(by_detail["medium"]) < min(by_detail["long"])
    assert max(by_detail["long"]) <= MAX_CLIP_TOKENS
    assert max(by_detail["long"]) >= 45
    assert all(s.tags for s in suite)


def test_builtin_suite_ids_follow_theme_prefixes():
    for line in SUITE_PATH.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert regex.fullmatch(r"[a-z]+-\d{3}", record["id"]), record["id"]


# --- parsing ---------------------------------------------------------------------------------------------

LONG_TEXT = " ".join(["a glowing jellyfish drifts slowly"] * 16)  # ~80 words, well over 77 tokens


def test_csv_parses_with_optional_columns():
    data = (
        b"id,text,theme,detail,tags\n"
        b'p1,"A dog runs, jumps and rolls",pets,short,animals;fast-motion\n'
        b"p2,Rain falls on a lake,nature,,fluid|weather\n"
    )
    specs = parse_prompt_file(data, "prompts.csv")
    assert specs == [
        PromptSpec("p1", "A dog runs, jumps and rolls", "pets", "short", ("animals", "fast-motion")),
        PromptSpec("p2", "Rain falls on a lake", "nature", "medium", ("fluid", "weather")),
    ]


def test_csv_with_bom_and_crlf_and_minimal_columns():
    data = "\ufeffid,text,theme\r\np1,A kite climbs into the wind,sky\r\n".encode()
    assert parse_prompt_file(data, "x.CSV") == [PromptSpec("p1", "A kite climbs into the wind", "sky")]


def test_bad_csv_reports_every_error_with_its_line():
    data = (
        "id,text,theme,detail\n"  # line 1
        "ok-1,A boat sails,sea,short\n"  # 2 fine
        "ok-2,,sea,short\n"  # 3 blank text
        "ok-1,A boat sinks,sea,medium\n"  # 4 duplicate id
        "ok-4,A boat floats,sea,huge\n"  # 5 bad detail
        "\n"  # 6 blank line: skipped
        f'ok-5,"{LONG_TEXT}",sea,long\n'  # 7 too long
        "ok-6,A boat,sea,short,extra\n"  # 8 too many values
        "bad id!,A boat,,short\n"  # 9 bad id and blank theme
    ).encode()
    with pytest.raises(PromptFileError) as exc:
        parse_prompt_file(data, "p.csv")
    errors = exc.value.errors
    lines = sorted({int(regex.match(r"line (\d+):", e).group(1)) for e in errors})
    assert lines == [3, 4, 5, 7, 8, 9]
    joined = "\n".join(errors)
    assert "line 4: id 'ok-1' is already used on line 2" in joined
    assert "line 5: detail 'huge'" in joined
    n = count_clip_tokens(LONG_TEXT)
    assert n > 77
    assert (f"line 7: prompt 'ok-5' is {n} CLIP tokens; the text encoder keeps only 77 and would silently cut the "
            "rest — shorten it") in errors
    assert any(e.startswith("line 9:") and "theme" in e for e in errors)
    assert any(e.startswith("line 9:") and "id 'bad id!'" in e for e in errors)


def test_csv_unknown_and_missing_columns():
    with pytest.raises(PromptFileError) as exc:
        parse_prompt_file(b"id,prompt,theme,colour\np1,x,y,z\n", "p.csv")
    assert any("unknown column(s) 'prompt', 'colour'" in e for e in exc.value.errors)
    assert any("missing column(s) 'text'" in e for e in exc.value.errors)


def test_undecodable_bytes_are_reported_per_line():
    data = b"id,text,theme\np1,caf\xe9 at dawn,city\np2,ok text,city\np3,\xff\xfe,city\n"
    with pytest.raises(PromptFileError) as exc:
        parse_prompt_file(data, "p.csv")
    assert [e.split(":")[0] for e in exc.value.errors] == ["line 2", "line 4"]
    assert all("not valid UTF-8" in e for e in exc.value.errors)


def test_jsonl_parses_and_reports_errors():
    good = b'{"id": "a1", "text": "Snow falls on a quiet street", "theme": "city", "tags": ["weather"]}\n'
    assert parse_prompt_file(good, "p.jsonl") == [
        PromptSpec("a1", "Snow falls on a quiet street", "city", "medium", ("weather",))]
    bad = (
        good
        + b'{"id": "a2", "text": "x", "theme": "city"\n'  # 2 bad JSON
        + b'["a3"]\n'  # 3 not an object
        + b'{"id": "a4", "text": "x", "theme": "city", "colour": "red"}\n'  # 4 unknown key
        + b'{"id": "a5", "text": "x", "theme": "city", "tags": "a;b", "detail": 3}\n'  # 5 bad detail
        + b'{"id": "a1", "text": "x", "theme": 7}\n'  # 6 duplicate id, theme not text
    )
    with pytest.raises(PromptFileError) as exc:
        parse_prompt_file(bad, "p.jsonl")
    lines = [int(regex.match(r"line (\d+):", e).group(1)) for e in exc.value.errors]
    assert sorted(set(lines)) == [2, 3, 4, 5, 6]


def test_empty_file_and_unknown_type_are_refused():
    with pytest.raises(PromptFileError, match="no prompts"):
        parse_prompt_file(b"id,text,theme\n", "p.csv")
    with pytest.raises(PromptFileError, match="neither .csv nor .jsonl"):
        parse_prompt_file(b"id,text,theme\n", "p.xlsx")


# --- adding to a study -----------------------------------------------------------------------------------


def test_add_prompts_adds_and_refuses_duplicates_whole(session):
    study = make_study(session, n_prompts=2)  # has p000, p001
    added = add_prompts(session, study_id=study.id, specs=[PromptSpec("n1", "A bird lands on a wire", "birds",
                                                                      "short", ("animals",))])
    assert [(p.external_id, p.tags) for p in added] == [("n1", ["animals"])]
    session.commit()
    count = session.scalar(select(func.count()).select_from(Prompt).where(Prompt.study_id == study.id))
    with pytest.raises(PromptError) as exc:
        add_prompts(session, study_id=study.id, specs=[PromptSpec("n2", "A fresh prompt", "x"),
                                                       PromptSpec("p000", "Clashes with the study", "x")])
    assert "'p000' is already in study" in str(exc.value)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Prompt).where(Prompt.study_id == study.id)) == count


def test_add_prompts_refuses_over_long_text(session):
    study = make_study(session, n_prompts=0)
    with pytest.raises(PromptError, match="CLIP tokens"):
        add_prompts(session, study_id=study.id, specs=[PromptSpec("x", LONG_TEXT, "sea")])
