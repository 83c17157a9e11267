"""The blinding walk and the byte-level attacker again, with every clip in an S3 bucket (a real SeaweedFS with
checked credentials, tests/support/seaweed.py): the web server reads the objects and serves them itself, so
nothing of the store (bucket, key, endpoint, provider headers, the store's ETag or dates) may reach an evaluator,
and the bytes must be the same ones the local store serves."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from app import config
from app.models import Clip
from tests.app.web.test_blinding import secret_study  # noqa: F401 - the fixture, stored through the S3 settings
from tests.app.web.test_blinding import test_nothing_an_evaluator_can_reach_names_a_model as blinding_walk
from tests.security import test_byte_side_channels as byte_attack
from tests.support.seaweed_fixtures import _reset

pytestmark = pytest.mark.s3


def _store_secrets(env: dict[str, str], clips: list[Clip]) -> set[str]:
    """What an evaluator must not learn about the store: its address, bucket, prefix, keys, server and headers."""
    endpoint = urlsplit(env["BLINDPAIR_S3_ENDPOINT_URL"])
    out = {env["BLINDPAIR_S3_BUCKET"], env["BLINDPAIR_S3_PREFIX"].rstrip("/"), endpoint.netloc,
           str(endpoint.port), "seaweed", "x-amz", "amz-", env["AWS_ACCESS_KEY_ID"]}
    for clip in clips:
        out |= {clip.storage_name, clip.storage_name.removesuffix(".gif")}
    return out


def test_the_blinding_walk_over_clips_in_a_bucket(s3_env, client, session, secret_study):  # noqa: F811
    study, secrets, tokens = secret_study
    clips = session.scalars(select(Clip).where(Clip.study_id == study.id)).all()
    # Every clip the walk can reach, attention-check copies included, lives in the bucket, none on this disk.
    assert {c.storage for c in clips} == {"s3"} and any(c.variant for c in clips)
    assert not any(config.get_settings().resolved_media_dir.glob("*.gif"))
    store_secrets = _store_secrets(s3_env, clips)
    session.commit()  # SQLite: the walk's writes must not wait on this session's read
    blinding_walk(client, (study, secrets | store_secrets, tokens))


def test_the_byte_attacker_is_at_chance_on_clips_from_a_bucket(s3_env, client, session, tmp_path):
    byte_attack.test_an_attackers_classifier_over_the_served_bytes_is_at_chance(client, session, tmp_path)
    assert {c.storage for c in session.scalars(select(Clip))} == {"s3"}


def test_a_clip_is_served_byte_for_byte_alike_from_either_store(s3_env, client, session, tmp_path, monkeypatch):
    """The same upload, imported once into the bucket and once into the local folder, is served with the same
    bytes and the same header names: where a study keeps its clips is not visible to its evaluators."""
    from tests.factories import NO_CHECKS, make_study

    def served(label: str) -> tuple[list[bytes], list[set[str]]]:
        study = make_study(session, models=("model-x", "model-y"), n_prompts=3, qc=NO_CHECKS)
        rng = byte_attack.np.random.default_rng(11)
        byte_attack._import(session, tmp_path / label, study, {
            (m, p.external_id): byte_attack._gif(byte_attack._scene(rng, busy=m == "model-x"))
            for p in study.prompts for m in ("model-x", "model-y")})
        clips = session.scalars(select(Clip).where(Clip.study_id == study.id).order_by(Clip.id)).all()
        answers = [client.get(f"/m/{c.media_token}") for c in clips]
        return [r.content for r in answers], [{k.lower() for k in r.headers if k.lower() != "etag"} for r in answers]

    s3_bodies, s3_headers = served("s3")
    monkeypatch.setenv("BLINDPAIR_STORAGE", "local")
    _reset()
    local_bodies, local_headers = served("local")
    assert s3_bodies == local_bodies and s3_headers == local_headers
