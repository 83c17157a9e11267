"""A small HTTP/1.1 client on asyncio streams for the load generator: keep-alive connections to one loopback
server, JSON and form bodies, Content-Length and chunked responses, nothing else (no TLS, no redirects, no
cookie jar: the load generator sends its evaluators' cookies itself).

Why not httpx: driving 200 votes/s through one httpx ``AsyncClient`` cost the generator about a core of CPU
(46.8 s of CPU in a 50 s open-loop run, bench/launch.py), as much as the server it measured, on a 2-core
machine: the queueing measured was the two fighting over the cores. This client costs a small fraction of that
per request. It answers the subset of httpx's interface the generator uses (``get``/``post``, ``status_code``,
``headers.get``/``get_list``, ``text``, ``json()``), so the voters are the same code whichever drives them.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

IDLE_REUSE_S = 2.0  # well inside uvicorn's 5 s keep-alive timeout (gunicorn's sync workers close at once)


class LeanHTTPError(Exception):
    """The connection failed, closed mid-answer or timed out (httpx would raise one of its HTTPErrors)."""


class Headers:
    """Response headers, case-insensitive, repeated names kept."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def get(self, name: str, default: str = "") -> str:
        name = name.lower()
        return next((v for k, v in self._items if k == name), default)

    def get_list(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k == name]


class Response:
    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class LeanClient:
    """Keep-alive connections to ``base_url`` (``http://host:port``), reused one request at a time each."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, max_connections: int = 128) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"LeanClient speaks plain http to one host, not {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _reader, writer, _since in idle:
            writer.close()

    async def get(self, url: str, *, params: Mapping[str, str] | None = None,
                  headers: Mapping[str, str] | None = None) -> Response:
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        return await self.request("GET", url, headers=headers)

    async def post(self, url: str, *, json: Any = None, data: Mapping[str, str] | None = None,
                   content: str | bytes | None = None, headers: Mapping[str, str] | None = None) -> Response:
        body, kind = b"", None
        if json is not None:
            body, kind = jsonlib.dumps(json).encode(), "application/json"
        elif data is not None:
            body, kind = urlencode(data).encode(), "application/x-www-form-urlencoded"
        elif content is not None:
            body = content.encode() if isinstance(content, str) else content
        return await self.request("POST", url, body=body, content_type=kind, headers=headers)

    async def request(self, method: str, url: str, *, body: bytes = b"", content_type: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        lines = [f"{method} {url} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept: */*"]
        names = {k.lower() for k in (headers or {})}
        if content_type and "content-type" not in names:
            lines.append(f"Content-Type: {content_type}")
        if method != "GET" or body:
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        async with self._slots:
            try:
                return await asyncio.wait_for(self._exchange(raw), self.timeout)
            except TimeoutError as exc:  # before OSError, of which it is a subclass
                raise LeanHTTPError(f"{method} {url}: no answer within {self.timeout:g} s") from exc
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                raise LeanHTTPError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc

    def _reusable(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """An idle connection the server has not closed and will not close before this request reaches it:
        servers drop idle keep-alive connections (uvicorn after 5 s), and a request written to one as it closes
        is lost, so one idle for IDLE_REUSE_S is closed here instead."""
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if not reader.at_eof() and now - since < IDLE_REUSE_S:
                return reader, writer
            writer.close()
        return None

    async def _exchange(self, raw: bytes) -> Response:
        reader, writer = self._reusable() or await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(raw)
            response, keep = await _read_response(reader)
        except BaseException:
            writer.close()
            raise
        if keep:
            self._idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return response


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    version, code = status_line.split(" ", 2)[:2]
    items = []
    for line in header_lines:
        name, _, value = line.partition(":")
        items.append((name.strip().lower(), value.strip()))
    headers = Headers(items)
    if (headers.get("transfer-encoding") or "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers are sent by the servers measured
                break
            chunks.append((await reader.readexactly(size + 2))[:-2])
        content = b"".join(chunks)
    else:
        content = await reader.readexactly(int(headers.get("content-length") or 0))
    connection = (headers.get("connection") or "").lower()
    keep = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
    return Response(int(code), headers, content), keep
