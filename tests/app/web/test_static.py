"""The favicon and the static files' cache headers, over HTTP on the real files."""

from __future__ import annotations

import io
import re

from PIL import Image

from app import templating
from tests.factories import make_user


def test_favicon_is_served_at_the_root_and_linked_from_every_page(client, session):
    make_user(session, role="admin")
    session.commit()
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/x-icon"
    assert "max-age=86400" in r.headers["cache-control"]
    icon = Image.open(io.BytesIO(r.content))
    assert icon.format == "ICO" and (32, 32) in icon.info["sizes"]
    page = client.get("/login").text
    link = re.search(r'<link rel="icon" href="http://testserver(/static/favicon\.ico\?v=[0-9a-f]{12})"', page)
    assert link, f"base.html links the icon: {page[:400]}"
    assert client.get(link.group(1)).content == r.content


def test_versioned_static_urls_are_cached_for_a_year_bare_ones_revalidate(client, session):
    make_user(session, role="admin")
    session.commit()
    page = client.get("/login").text
    css = re.search(r'href="http://testserver(/static/css/app\.css\?v=([0-9a-f]{12}))"', page)
    assert css, "pages link static files with their content digest"
    versioned = client.get(css.group(1))
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
    bare = client.get("/static/css/app.css")
    assert bare.headers["cache-control"] == "no-cache" and bare.headers.get("etag")
    assert bare.content == versioned.content
    assert client.get("/static/css/app.css", headers={"If-None-Match": bare.headers["etag"]}).status_code == 304


def test_the_version_follows_the_file_content(tmp_path, monkeypatch):
    monkeypatch.setattr(templating, "STATIC_DIR", tmp_path)
    target = tmp_path / "x.css"
    target.write_text("a { color: red; }")
    first = templating.static_version("x.css")
    target.write_text("a { color: blue; }")
    second = templating.static_version("x.css")
    assert first != second and len(second) == 12
    assert templating.static_version("missing.css") == "missing"
