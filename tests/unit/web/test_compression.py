"""What the browser receives: the bundle pre-compressed by what it accepts, cacheable forever under
its hashed name; pages gzipped; and the bytes always decode to the file itself."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.testclient import TestClient

from urbanstack import webassets as assets
from urbanstack.runtime.web.compression import PrecompressedStatic, accepted, compress_pages
from urbanstack.runtime.web.rendering import STATIC_DIR


@pytest.fixture(scope="module")
def client():
    assets.build()
    app = FastAPI()
    app.mount("/static", PrecompressedStatic(directory=STATIC_DIR), name="static")

    @app.get("/page", response_class=HTMLResponse)
    def page():
        return "<!doctype html><title>t</title>" + "<p>Passanten</p>" * 500

    @app.get("/small", response_class=HTMLResponse)
    def small():
        return "<p>kurz</p>"

    @app.get("/csv")
    def csv():
        return PlainTextResponse("a;b\r\n" * 1000, media_type="text/csv")

    compress_pages(app)
    return TestClient(app)


def url(logical: str) -> str:
    return "/static/dist/" + assets.manifest()["files"][logical]


def raw(client, path, encoding):
    # httpx would decode gzip itself; ask for the bytes as sent
    with client.stream("GET", path, headers={"Accept-Encoding": encoding}) as response:
        return response, b"".join(response.iter_raw())


def test_brotli_first_then_gzip_then_plain(client):
    plain = (assets.DIST / assets.manifest()["files"]["charts.js"]).read_bytes()
    response, body = raw(client, url("charts.js"), "gzip, deflate, br")
    assert response.headers["content-encoding"] == "br" and response.headers["vary"] == "Accept-Encoding"
    assert response.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert len(body) < len(plain) / 2
    if shutil.which("node"):
        decoded = subprocess.run(["node", "-e", "process.stdout.write(require('zlib').brotliDecompressSync("
                                 "require('fs').readFileSync(0)))"], input=body, capture_output=True, check=True)
        assert decoded.stdout == plain
    response, body = raw(client, url("charts.js"), "gzip")
    assert response.headers["content-encoding"] == "gzip" and gzip.decompress(body) == plain
    response, body = raw(client, url("charts.js"), "identity")
    assert "content-encoding" not in response.headers and body == plain
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    response, body = raw(client, url("charts.js"), "br;q=0, gzip")
    assert response.headers["content-encoding"] == "gzip"


def test_the_manifest_and_unknown_files_are_not_cached_forever(client):
    response = client.get("/static/dist/manifest.json")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-cache"
    assert client.get("/static/dist/nothing.0123456789.js").status_code == 404


def test_pages_are_gzipped_above_the_threshold(client):
    response, body = raw(client, "/page", "gzip, br")
    assert response.headers["content-encoding"] == "gzip" and "Accept-Encoding" in response.headers["vary"]
    assert gzip.decompress(body).decode().count("Passanten") == 500
    response, body = raw(client, "/small", "gzip")
    assert "content-encoding" not in response.headers and body == b"<p>kurz</p>"
    response, body = raw(client, "/page", "identity")
    assert "content-encoding" not in response.headers and body.decode().count("Passanten") == 500


def test_accept_encoding_parsing():
    assert accepted("gzip, deflate, br") == {"gzip", "deflate", "br"}
    assert accepted("br;q=0, gzip;q=0.5") == {"gzip"}
    assert accepted("") == set()


def _spliced_app() -> FastAPI:
    from urbanstack.runtime.web.compression import SPLICE, Fragment, spliced_page

    panels = Fragment("".join(f"<figure><p>Panel {i}: {i * 1.5} °C – Pegel</p></figure>" for i in range(3000)))
    app = FastAPI()

    @app.get("/dashboard")
    def dashboard(request: Request, user: str = "Erika", twice: bool = False):
        page = f"<!doctype html><title>Dashboard</title><p>{user} – Übersicht</p>{SPLICE}<footer>Ende</footer>"
        return spliced_page(request.scope, page + (str(SPLICE) if twice else ""), panels)

    compress_pages(app)
    app.state.expected = lambda user, twice=False: (
        f"<!doctype html><title>Dashboard</title><p>{user} – Übersicht</p>{panels}<footer>Ende</footer>"
        + (str(panels) if twice else ""))
    return app


def test_a_page_around_a_compressed_fragment_decodes_to_the_whole_page():
    app = _spliced_app()
    client = TestClient(app)
    for user in ("Erika", "Max Mustermann"):
        raw = client.get("/dashboard", params={"user": user}, headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip" and raw.headers["vary"] == "Accept-Encoding"
        assert raw.text == app.state.expected(user)             # httpx checks the gzip trailer (CRC, size)
        assert raw.headers["content-type"].startswith("text/html")
    # gzip -d of the very bytes sent (one gzip member, one DEFLATE stream)
    with client.stream("GET", "/dashboard", headers={"Accept-Encoding": "gzip"}) as answer:
        sent = b"".join(answer.iter_raw())
    assert gzip.decompress(sent).decode() == app.state.expected("Erika")
    assert len(sent) < len(app.state.expected("Erika").encode()) / 5


def test_a_client_without_gzip_and_a_page_without_one_splice_get_the_page_as_usual():
    app = _spliced_app()
    client = TestClient(app)
    plain = client.get("/dashboard", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == app.state.expected("Erika")
    twice = client.get("/dashboard", params={"twice": "true"}, headers={"Accept-Encoding": "gzip"})
    assert twice.text == app.state.expected("Erika", twice=True)   # compressed by the page compression
