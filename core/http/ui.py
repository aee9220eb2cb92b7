"""The built-in web UI: feature pages at ``/``, the admin console at ``/admin/...`` and
their static files at ``/ui/static/...``.

The UI is plain HTML, CSS and ES modules shipped as package data
(``aiport/core/data/ui``), so a wheel needs no front-end build step. It only
calls aiport's own public APIs; nothing here grants access to anything.

Two things make it work wherever aiport is mounted (``parent.add_subapp("/ai/", app)``
or behind a proxy that strips a prefix):

- every URL in the UI is relative, resolved against a ``<base href>`` that this module
  writes into each page as a *relative* path (``./``, ``../``...) computed from how deep
  the page sits under the app's root, so the prefix never has to be known;
- static URLs carry a build id (a hash of the static files), ``ui/static/b-<hash>/app.js``.
  ES-module imports are relative, so every module a page loads carries the same id and
  can be cached for a year; a new release changes the id and browsers fetch the new files.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from importlib import resources
from pathlib import Path

import attrs
from aiohttp import web

from ..errors import NotFound
from ..version import __version__
from .routes import add_plain

#: A build id as it appears as the first segment of a static path.
_BUILD = re.compile(r"b-[0-9a-f]{12}")
#: Static files under a matching build id never change.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Unversioned (or old-build) static URLs: cache briefly, revalidate with the ETag after.
SHORT = "public, max-age=300"
#: The UI talks to aiport only; artifacts may live elsewhere (a public_base_url, an
#: object store), so images and media may come from any origin, scripts never do.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src * data: blob:; media-src * data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {
    # The HTML is tiny and names the current build's assets: always revalidate it.
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The admin console's URLs are nobody else's business.
    "Referrer-Policy": "no-referrer",
}


def ui_root() -> Path:
    """The folder the UI ships in (package data of ``aiport.core``)."""
    return Path(str(resources.files("aiport.core").joinpath("data/ui")))


@attrs.define
class UiFiles:
    """The UI's files and what is derived from them, read once on first use."""

    root: Path
    build: str | None = None
    pages: dict[str, str] = attrs.field(factory=dict)
    _lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)

    async def load(self) -> None:
        # Read lazily (in a thread) so create_app stays free of I/O.
        if self.build is not None:
            return
        async with self._lock:
            if self.build is None:
                self.pages, self.build = await asyncio.to_thread(self._read)

    def _read(self) -> tuple[dict[str, str], str]:
        digest = hashlib.sha256()
        static = self.root / "static"
        for path in sorted(p for p in static.rglob("*") if p.is_file()):
            digest.update(path.relative_to(static).as_posix().encode() + b"\0" + path.read_bytes())
        pages = {name: (self.root / f"{name}.html").read_text("utf-8") for name in ("index", "admin")}
        return pages, "b-" + digest.hexdigest()[:12]

    async def page(self, name: str, depth: int) -> web.Response:
        """A page with its relative ``<base href>`` and the current build's static folder filled in."""
        await self.load()
        base = "../" * depth or "./"
        html = (self.pages[name].replace("{{base}}", base).replace("{{static}}", f"ui/static/{self.build}/")
                .replace("{{version}}", __version__))
        return web.Response(text=html, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


UI = web.AppKey("aiport.ui", UiFiles)


async def features_page(request: web.Request) -> web.Response:
    return await request.app[UI].page("index", 0)


async def admin_page(request: web.Request) -> web.Response:
    """The admin SPA for ``/admin`` and every path under it (the SPA routes in the browser)."""
    tail = request.match_info.get("tail")
    # /admin is at the root's depth; /admin/ and /admin/x one deeper; each further "/" one more.
    depth = 0 if tail is None else 1 + tail.count("/")
    return await request.app[UI].page("admin", depth)


async def static_file(request: web.Request) -> web.StreamResponse:
    """``/ui/static/[b-<build>/]path``: a UI file, with an ETag (``FileResponse``) and cache headers."""
    ui = request.app[UI]
    await ui.load()
    path = request.match_info["path"]
    cache = SHORT
    first, _, rest = path.partition("/")
    if _BUILD.fullmatch(first):
        # An old build id (a page open across an upgrade) gets today's files, not cached for long.
        cache = IMMUTABLE if first == ui.build else SHORT
        path = rest
    static = (ui.root / "static").resolve()
    target = (static / path).resolve()
    if not path or not target.is_relative_to(static) or not target.is_file():
        raise NotFound("No such UI file.")
    return web.FileResponse(target, headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"})


def install(app: web.Application) -> None:
    """Serve the UI on ``app``."""
    app[UI] = UiFiles(ui_root())
    add_plain(app, "GET", "/", features_page, "Web UI: feature pages (chat, images, speech, transforms)")
    add_plain(app, "GET", "/admin", admin_page, "Web UI: admin console")
    add_plain(app, "GET", "/admin/{tail:.*}", admin_page, "Web UI: admin console (any page)")
    add_plain(app, "GET", "/ui/static/{path:.*}", static_file, "Web UI: static files")
