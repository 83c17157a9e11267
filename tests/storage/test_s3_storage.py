"""Clips in an S3 bucket, against a real SeaweedFS with checked credentials: storing, serving, the worker's
upload-then-record, check, migrate, orphans, import from a bucket prefix, and the operator's messages."""

from __future__ import annotations

import hashlib
import re
import socket
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app import config
from app.cli import app as cli_app
from app.media import storage
from app.media.storage import StorageConfigError, StorageUnavailable, read_bytes, store_bytes
from app.models import Clip
from app.services import generation as gen
from app.services import storage as svc
from tests.factories import NO_CHECKS, gif_bytes, make_pairs, make_study, make_user
from tests.support.seaweed_fixtures import _reset
from tests.support.web import login
from worker import tasks

runner = CliRunner()
DEMO = ("demo-smooth", "demo-jittery")


def _objects(seaweed, env: dict[str, str], prefix: str | None = None) -> dict[str, bytes]:
    """The objects under the test's prefix (or ``prefix``), by key without it, read with the server's own client."""
    client, bucket = seaweed.client(), env["BLINDPAIR_S3_BUCKET"]
    prefix = env["BLINDPAIR_S3_PREFIX"] if prefix is None else prefix
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {k[len(prefix):]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _local_files() -> list[str]:
    root = config.get_settings().resolved_media_dir
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: nothing listens there


def test_a_clip_goes_to_the_bucket_under_a_random_key_and_comes_back(seaweed, s3_env):
    data = gif_bytes()
    stored = store_bytes(data)
    assert stored.store == "s3" and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{32}\.gif", stored.storage_name)  # random: names no model, prompt or study
    assert _objects(seaweed, s3_env) == {stored.storage_name: data}
    assert read_bytes(stored.storage_name, "s3") == data and _local_files() == []
    storage.delete_media(stored.storage_name, "s3")
    assert _objects(seaweed, s3_env) == {}
    with pytest.raises(FileNotFoundError):  # a missing object reads as a missing file does
        read_bytes(stored.storage_name, "s3")


def test_the_prefix_is_the_only_thing_before_the_name(seaweed, s3_env, monkeypatch):
    prefix = s3_env["BLINDPAIR_S3_PREFIX"] + "lab/clips/"
    monkeypatch.setenv("BLINDPAIR_S3_PREFIX", prefix)
    _reset()
    stored = store_bytes(gif_bytes())
    assert list(_objects(seaweed, s3_env, prefix=s3_env["BLINDPAIR_S3_PREFIX"])) == [
        f"lab/clips/{stored.storage_name}"]
    assert storage.object_key(stored.storage_name, "s3") == prefix + stored.storage_name


def test_wrong_credentials_give_one_message_naming_the_setting(session, s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    _reset()
    with pytest.raises(StorageConfigError, match="AWS_SECRET_ACCESS_KEY") as caught:
        store_bytes(gif_bytes())
    assert "refused our credentials" in str(caught.value) and "Traceback" not in str(caught.value)
    session.commit()
    result = runner.invoke(cli_app, ["storage", "check"])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "refused our credentials" in out and "AWS_ACCESS_KEY_ID" in out and "Traceback" not in out


def test_a_missing_bucket_is_named_and_made_only_when_asked(seaweed, s3_env, monkeypatch, session):
    monkeypatch.setenv("BLINDPAIR_S3_BUCKET", "bp-not-made-yet")
    _reset()
    with pytest.raises(StorageConfigError, match="'bp-not-made-yet' does not exist"):
        storage.backend().probe()
    session.commit()
    result = runner.invoke(cli_app, ["storage", "check"])
    assert result.exit_code == 1 and "does not exist" in result.output and "--create-bucket" in result.output
    names = {b["Name"] for b in seaweed.client().list_buckets()["Buckets"]}
    assert "bp-not-made-yet" not in names  # asking about it made nothing
    result = runner.invoke(cli_app, ["storage", "check", "--create-bucket"])
    assert result.exit_code == 0, result.output
    assert "Created" in result.output and "0 clip(s) checked" in result.output
    assert store_bytes(gif_bytes()).store == "s3"


def test_a_store_that_does_not_answer_is_unavailable_not_missing(s3_env, monkeypatch):
    monkeypatch.setenv("BLINDPAIR_S3_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("BLINDPAIR_STORAGE_TIMEOUT_SECONDS", "1")
    _reset()
    with pytest.raises(StorageUnavailable, match="cannot be reached"):
        store_bytes(gif_bytes())
    with pytest.raises(StorageUnavailable):
        read_bytes("0" * 32 + ".gif", "s3")


# ------------------------------------------------------------------------------------------------- worker


def _demo_study(session, n_prompts=1):
    """Two models on the CPU demo renderer (no weights): a clip in well under a second."""
    study = make_study(session, models=("model-0", "model-1"), n_prompts=n_prompts, qc=NO_CHECKS)
    for model, preset in zip(study.models, DEMO, strict=True):
        model.preset = preset
    session.commit()
    return study


def test_the_worker_uploads_then_records_and_keeps_nothing_locally(seaweed, s3_env, session):
    study = _demo_study(session)
    ids: list[int] = []
    gen.queue_batch(session, study_id=study.id, send=ids.extend)
    session.commit()
    assert [tasks.run_clip(i) for i in ids] == ["done", "done"]
    session.expire_all()
    clips = session.scalars(select(Clip).where(Clip.id.in_(ids))).all()
    objects = _objects(seaweed, s3_env)
    # Each clip's served copy and its uncompressed master (the per-pair encoding's source), all in the bucket.
    named = {c.storage_name for c in clips} | {c.master_name for c in clips if c.master_name}
    assert {c.storage for c in clips} == {"s3"} and set(objects) == named
    assert all(hashlib.sha256(objects[c.storage_name]).hexdigest() == c.sha256 for c in clips)
    assert _local_files() == []


def test_a_store_down_through_the_upload_wait_leaves_the_clip_queued_not_failed(s3_env, session, monkeypatch):
    study = _demo_study(session)
    ids: list[int] = []
    gen.queue_batch(session, study_id=study.id, send=ids.extend)
    session.commit()
    monkeypatch.setenv("BLINDPAIR_S3_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("BLINDPAIR_STORAGE_UPLOAD_WAIT_SECONDS", "2")
    monkeypatch.setenv("BLINDPAIR_STORAGE_TIMEOUT_SECONDS", "1")
    _reset()
    with pytest.raises(tasks.StoreWait):
        tasks.run_clip(ids[0], retries=5, max_retries=3)  # past its retry budget: a store outage is not counted
    session.expire_all()
    clip = session.get(Clip, ids[0])
    assert clip.status == "queued" and clip.storage_name is None and "waiting for the clip store" in clip.error
    assert clip.claimed_by is None


def test_upload_retries_with_backoff_until_the_store_takes_it(s3_env, monkeypatch):
    calls: list[float] = []
    real = storage.store_bytes

    def flaky(data, suffix=".gif", **kw):
        calls.append(1)
        if len(calls) < 3:
            raise StorageUnavailable("the store cannot be reached")
        return real(data, suffix, **kw)

    monkeypatch.setattr(tasks, "store_bytes", flaky)
    slept: list[float] = []
    stored = tasks.upload_clip(gif_bytes(), wait_seconds=60, sleep=slept.append)
    assert len(calls) == 3 and stored.store == "s3"
    assert len(slept) == 2 and slept[1] > slept[0]  # backing off


# ------------------------------------------------------------------------------------------- web serving


def _clip_headers(client, token: str, **kw):
    r = client.get(f"/m/{token}", **kw)
    return r, {k.lower() for k in r.headers}


def test_media_from_the_bucket_is_served_like_local_media(seaweed, s3_env, session, client, monkeypatch):
    study = make_study(session, qc=NO_CHECKS)
    pairs = make_pairs(session, study)
    session.commit()
    clip = pairs[0].clip_a
    assert clip.storage == "s3" and _local_files() == []
    r, s3_headers = _clip_headers(client, clip.media_token)
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    assert not [h for h in s3_headers if h.startswith("x-amz") or "seaweed" in h]
    assert "last-modified" not in s3_headers and "SeaweedFS" not in r.headers.get("server", "")
    # Range requests, answered from the served bytes.
    part = client.get(f"/m/{clip.media_token}", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == r.content[:10]
    assert part.headers["content-range"] == f"bytes 0-9/{len(r.content)}"
    assert client.get(f"/m/{clip.media_token}", headers={"Range": f"bytes={len(r.content)}-"}).status_code == 416
    # The object key is not a handle: no route serves by it.
    assert client.get(f"/m/{clip.storage_name}").status_code == 404

    # The same study on local files: the same header names, the same caching.
    monkeypatch.setenv("BLINDPAIR_STORAGE", "local")
    _reset()
    local_study = make_study(session, qc=NO_CHECKS)
    local_clip = make_pairs(session, local_study)[0].clip_a
    session.commit()
    assert local_clip.storage == "local"
    lr, local_headers = _clip_headers(client, local_clip.media_token)
    assert lr.status_code == 200 and local_headers == s3_headers
    assert lr.headers["cache-control"] == r.headers["cache-control"]


def test_store_down_answers_503_with_retry_after_and_recovers(seaweed, s3_env, session, client, monkeypatch):
    from app.web import media

    study = make_study(session, qc=NO_CHECKS)
    clip = make_pairs(session, study)[0].clip_a
    session.commit()
    media._frame_lengths.cache_clear()
    media._body.cache_clear()
    good_endpoint = s3_env["BLINDPAIR_S3_ENDPOINT_URL"]
    monkeypatch.setenv("BLINDPAIR_S3_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("BLINDPAIR_STORAGE_TIMEOUT_SECONDS", "1")
    _reset()
    r = client.get(f"/m/{clip.media_token}")
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0 and r.headers["cache-control"] == "no-store"
    monkeypatch.setenv("BLINDPAIR_S3_ENDPOINT_URL", good_endpoint)
    _reset()
    assert client.get(f"/m/{clip.media_token}").status_code == 200


def test_the_study_page_says_where_clips_live_and_the_problem_in_words(seaweed, s3_env, session, client,
                                                                       monkeypatch):
    user = make_user(session, role="admin", password="correct horse battery")
    study = make_study(session, qc=NO_CHECKS, created_by_id=user.id)
    make_pairs(session, study)
    session.commit()
    login(client, user.email, "correct horse battery")
    page = client.get(f"/studies/{study.id}").text
    bucket = s3_env["BLINDPAIR_S3_BUCKET"]
    assert f"in the S3 bucket &#39;{bucket}&#39;" in page and "data-storage-problem" not in page
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    _reset()
    page = client.get(f"/studies/{study.id}").text
    assert "data-storage-problem" in page and "refused our credentials" in page


# ------------------------------------------------------------------------------------------ operations


def test_check_finds_missing_and_changed_objects_and_orphans(seaweed, s3_env, session):
    study = make_study(session, qc=NO_CHECKS)
    make_pairs(session, study)
    session.commit()
    clips = session.scalars(select(Clip).where(Clip.study_id == study.id).order_by(Clip.id)).all()
    report = svc.check_storage(session)
    assert report.ok and report.checked == len(clips) and report.orphans == []
    bucket, prefix = s3_env["BLINDPAIR_S3_BUCKET"], s3_env["BLINDPAIR_S3_PREFIX"]
    client = seaweed.client()
    client.delete_object(Bucket=bucket, Key=prefix + clips[0].storage_name)
    client.put_object(Bucket=bucket, Key=prefix + clips[1].storage_name, Body=b"not the clip")
    orphan = store_bytes(gif_bytes())
    session.commit()
    result = runner.invoke(cli_app, ["storage", "check"])
    assert result.exit_code == 1
    assert f"missing: clip {clips[0].id}" in result.output and f"sha256 differs: clip {clips[1].id}" in result.output
    assert f"orphan: {orphan.storage_name}" in result.output


def test_migrate_moves_a_study_both_ways_and_resumes(seaweed, s3_env, session, monkeypatch):
    monkeypatch.setenv("BLINDPAIR_STORAGE", "local")
    _reset()
    study = make_study(session, qc=NO_CHECKS)
    make_pairs(session, study)
    session.commit()
    ids = list(session.scalars(select(Clip.id).where(Clip.study_id == study.id).order_by(Clip.id)))
    before = {c.id: (c.storage_name, c.sha256) for c in session.scalars(select(Clip).where(Clip.id.in_(ids)))}
    slug = study.slug
    session.commit()  # SQLite: the CLI's writes must not wait on this session's read transaction

    # Interrupted after two clips (the store stops answering): those two are switched, the rest untouched.
    real_put = storage.S3Backend.put
    calls = {"n": 0}

    def put_then_fail(self, name, data):
        calls["n"] += 1
        if calls["n"] > 2:
            raise StorageUnavailable("the store cannot be reached")
        return real_put(self, name, data)

    monkeypatch.setattr(storage.S3Backend, "put", put_then_fail)
    result = runner.invoke(cli_app, ["storage", "migrate", "--study", slug, "--to", "s3"])
    assert result.exit_code == 1 and "run the command again" in " ".join(result.output.split())
    session.expire_all()
    assert [session.get(Clip, i).storage for i in ids].count("s3") == 2
    session.commit()
    monkeypatch.setattr(storage.S3Backend, "put", real_put)

    result = runner.invoke(cli_app, ["storage", "migrate", "--study", slug, "--to", "s3"])
    assert result.exit_code == 0, result.output
    assert f"{len(ids) - 2} clip(s) copied" in result.output and "2 already there" in result.output
    session.expire_all()
    assert {session.get(Clip, i).storage for i in ids} == {"s3"}
    objects = _objects(seaweed, s3_env)
    assert {name: hashlib.sha256(objects[name]).hexdigest() for name, _ in before.values()} == dict(before.values())
    assert svc.check_storage(session, study_id=study.id).ok
    session.commit()

    result = runner.invoke(cli_app, ["storage", "migrate", "--study", slug, "--to", "local"])
    assert result.exit_code == 0, result.output
    session.expire_all()
    assert {session.get(Clip, i).storage for i in ids} == {"local"}
    assert svc.check_storage(session, store="local", study_id=study.id).ok


def test_the_sweeper_removes_only_old_objects_no_clip_names(seaweed, s3_env, session):
    study = make_study(session, qc=NO_CHECKS)
    make_pairs(session, study)
    session.commit()
    named = set(session.scalars(select(Clip.storage_name)))
    orphan = store_bytes(gif_bytes()).storage_name  # an upload whose clip was never recorded
    assert svc.sweep_orphans(session, older_than_seconds=3600) == []  # too young: its row may be on the way
    later = datetime.now(UTC) + timedelta(hours=2)
    assert svc.sweep_orphans(session, older_than_seconds=3600, now=later) == [orphan]
    assert set(_objects(seaweed, s3_env)) == named


def test_import_from_a_bucket_prefix(seaweed, s3_env, session):
    study = make_study(session, models=("alpha", "beta"), n_prompts=2, qc=NO_CHECKS)
    session.commit()
    source, renders = s3_env["BLINDPAIR_S3_BUCKET"], s3_env["BLINDPAIR_S3_PREFIX"] + "renders/run1"
    client = seaweed.client()
    for i, model in enumerate(("alpha", "beta")):
        for prompt in study.prompts:
            client.put_object(Bucket=source, Key=f"{renders}/{model}/{prompt.external_id}.gif",
                              Body=gif_bytes(colour=(200, 40 + 100 * i, 40)))
    slug = study.slug
    session.commit()
    result = runner.invoke(cli_app, ["import-gifs", f"s3://{source}/{renders}", "--study", slug,
                                     "--no-metrics"])
    assert result.exit_code == 0, result.output
    assert "4 new" in result.output
    session.expire_all()
    clips = session.scalars(select(Clip).where(Clip.study_id == study.id)).all()
    assert len(clips) == 4 and {c.storage for c in clips} == {"s3"}
    assert svc.check_storage(session, study_id=study.id).ok
    session.commit()
    # A prefix with nothing under it: refused in words, nothing changed.
    result = runner.invoke(cli_app, ["import-gifs", f"s3://{source}/nothing-here", "--study", slug,
                                     "--no-metrics"])
    assert result.exit_code == 1 and "holds no clips" in " ".join(result.output.split())


def test_the_manifest_records_key_and_hash(seaweed, s3_env, session, monkeypatch):
    from app.services import exports

    study = make_study(session, qc=NO_CHECKS)
    make_pairs(session, study)
    session.commit()
    frame = exports.clips_manifest_frame(session, study=study)
    objects = _objects(seaweed, s3_env)
    for row in frame.itertuples():
        assert row.storage_key.startswith(s3_env["BLINDPAIR_S3_PREFIX"])
        key = row.storage_key[len(s3_env["BLINDPAIR_S3_PREFIX"]):]
        assert row.storage == "s3" and hashlib.sha256(objects[key]).hexdigest() == row.sha256


def test_a_clip_whose_object_is_gone_is_not_found_not_a_store_outage(seaweed, s3_env, session, client):
    study = make_study(session, qc=NO_CHECKS)
    clip = make_pairs(session, study)[0].clip_a
    session.commit()
    seaweed.client().delete_object(Bucket=s3_env["BLINDPAIR_S3_BUCKET"],
                                   Key=s3_env["BLINDPAIR_S3_PREFIX"] + clip.storage_name)
    assert client.get(f"/m/{clip.media_token}").status_code == 404
