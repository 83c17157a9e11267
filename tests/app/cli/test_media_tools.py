"""``blindpair worker`` and ``blindpair demo`` say in the terminal, when they start, which tool that changes what
raters see is missing and the command that installs it (before: only the worker's log, once per clip)."""

from __future__ import annotations

import stat

import pytest
import typer
from typer.testing import CliRunner

from app.cli import app
from worker import media_tools

runner = CliRunner()


@pytest.fixture
def no_gifsicle(tmp_path, monkeypatch):
    """A PATH without gifsicle (the Python interpreter runs by its absolute path, so nothing else changes)."""
    empty = tmp_path / "bin-empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.fixture
def with_gifsicle(tmp_path, monkeypatch):
    here = tmp_path / "bin-gifsicle"
    here.mkdir()
    fake = here / "gifsicle"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(here))


def test_worker_names_missing_gifsicle_and_its_install_command_first(no_gifsicle):
    # No migrated database here: the worker stops at that check, after the warning was printed.
    result = runner.invoke(app, ["worker", "--device", "cpu"])
    assert result.exit_code != 0
    err = result.stderr
    assert "gifsicle is missing: GIF clips are written without lossy compression" in err
    assert "Install it: sudo apt-get install gifsicle" in err
    assert err.index("gifsicle is missing") < err.index("blindpair db upgrade")


def test_worker_says_nothing_when_the_tools_are_there(with_gifsicle):
    result = runner.invoke(app, ["worker", "--device", "cpu"])
    assert "is missing" not in result.stderr
    assert "blindpair db upgrade" in result.stderr  # it did start and reach the database check


def test_demo_says_it_before_it_builds_anything(no_gifsicle, monkeypatch):
    import app.cli.demo as demo

    def stop(*args, **kwargs):
        raise typer.Exit(9)

    monkeypatch.setattr(demo, "set_up_demo", stop)
    result = runner.invoke(app, ["demo", "--no-serve"])
    assert result.exit_code == 9
    assert "gifsicle is missing" in result.stderr and "sudo apt-get install gifsicle" in result.stderr
    assert "The demo goes on without it" in result.stderr


def test_a_missing_video_encoder_is_named_with_the_fix(with_gifsicle, monkeypatch):
    import av

    real = av.codec.Codec

    def codec(name, mode="r"):
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", codec)
    missing = media_tools.missing_media_tools()
    assert [m.name for m in missing] == ["PyAV MP4 (H.264) encoder (libx264)"]
    result = runner.invoke(app, ["worker", "--device", "cpu"])
    assert "PyAV MP4 (H.264) encoder (libx264) is missing" in result.stderr
    assert "pip install --force-reinstall --no-deps av" in result.stderr


def test_the_real_pyav_has_both_encoders():
    # The locked PyAV wheel (requirements/*.lock) is what the message above promises: it must hold true here.
    assert media_tools._missing_encoders() == []
