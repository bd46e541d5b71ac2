"""The Citizen Hub over HTTP, against the real warehouse engine and metadata store: the web
app ``urbanstack serve`` builds (Gov Hub + Citizen Hub behind the API's PathDispatch), with
two municipalities whose readings are in chDB. Open pedestrian counts appear in pages,
search, downloads and DCAT; Gütersloh's private weather appears nowhere, not even its name;
downloads hold exactly the warehouse's rows; no answer sets a cookie."""

from __future__ import annotations

import csv
import html
import dataclasses
import datetime as dt
import io
import json
import re
import uuid
from pathlib import Path
from urllib.parse import quote_plus

import pytest
import yaml
from fastapi.testclient import TestClient
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, RDF


from citizen_world import PEGEL, TOOL, CitizenWorld, _tool

from urbanstack import serve
from urbanstack.operator import naming
from urbanstack.runtime.api import create_app
from urbanstack.runtime.api.query import ApiLimits

pytestmark = pytest.mark.platform

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc
HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
DCATDE = Namespace("http://dcat-ap.de/def/dcatde/")
# What would give the private weather away: its dataset name, description and field names.
SECRETS = ("weather", "Hourly weather observations", "temperature", "precipitation", "relative_humidity")


@pytest.fixture(scope="module")
def world(warehouse):
    return CitizenWorld(warehouse)


@pytest.fixture(scope="module")
def web(world, issuer, settings, warehouse, metadata_store):
    settings = dataclasses.replace(settings, municipality_directory=str(ROOT / "tests/fixtures/municipalities.derived.csv"))
    # Small pages, so a download crosses many engine pages and windows.
    api = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     limits=ApiLimits(max_rows=100))
    app = serve.PathDispatch(api, serve.web_app(settings, world.catalogue, api, metadata_store))
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        client.store = metadata_store
        yield client


def _get(web, url, status=200, **kwargs):
    response = web.get(url, **kwargs)
    assert response.status_code == status, f"{url}: {response.status_code} {response.text[:500]}"
    assert "set-cookie" not in response.headers, f"{url} set a cookie: {response.headers['set-cookie']}"
    assert not web.cookies, f"{url} left cookies: {dict(web.cookies)}"
    return response


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def _without(body: str, *texts: str) -> str:
    """``body`` without what the user typed in (the search form and the language link echo it)."""
    for text in texts:
        for form in (text, quote_plus(text), html.escape(text)):
            body = re.sub(re.escape(form), "", body, flags=re.I)
    return body


def _assert_no_secret(where: str, body: str) -> None:
    for secret in SECRETS:
        assert secret.casefold() not in body.casefold(), f"{where} gives the private weather away: {secret!r}"


def test_region_page_shows_the_platforms_public_figures(web, world):
    page = _get(web, "/")
    assert page.headers["cache-control"] == "public, no-cache" and page.headers["etag"]
    text = _text(page.text)
    assert "Offene Daten der Region" in text
    # Gütersloh 102,000 + Bielefeld 338,000 residents per the directory; 2 open datasets
    assert re.search(r"\b440\.000 Einwohnerinnen und Einwohner", text), text[:2000]
    assert re.search(r"\b2 offene Datensätze", text), text[:2000]
    assert "Gütersloh" in text and "Bielefeld" in text
    _assert_no_secret("region page", page.text)


def test_start_page_lists_open_data_services_and_links(web, world):
    page = _get(web, f"/{world.gue}/")
    text = _text(page.text)
    assert "<h1>Gütersloh</h1>" in page.text
    assert "pedestrian counts" in text and "water levels" in text
    assert f'href="/{world.gue}/data/{TOOL}/pedestrian_counts"' in page.text
    assert f'href="/{world.gue}/services/{TOOL}"' in page.text       # audience both
    assert "102.000" in text
    _assert_no_secret("start page", page.text)
    english = _get(web, f"/{world.gue}/?lang=en")
    assert 'lang="en"' in english.text and "Open data" in english.text
    assert f'href="/{world.gue}/data/?lang=en"' in english.text      # the language stays in every link


def test_catalogue_search_and_filters(web, world):
    everything = _text(_get(web, "/data/").text)
    assert "Gefundene Datensätze: 2" in everything
    found = _get(web, "/data/", params={"q": "pedestrian"}).text
    assert "Gefundene Datensätze: 1" in _text(found) and "pedestrian counts" in found
    for query in SECRETS[:3]:
        body = _get(web, "/data/", params={"q": query}).text
        assert "Gefundene Datensätze: 0" in _text(body)
        _assert_no_secret(f"search for {query!r}", _without(body, query))
    by_theme = _text(_get(web, "/data/", params={"theme": "TRAN"}).text)
    assert "Gefundene Datensätze: 1" in by_theme and "pedestrian counts" in by_theme
    other = _text(_get(web, "/data/", params={"municipality": world.bi}).text)
    assert "Gefundene Datensätze: 0" in other
    own = _text(_get(web, f"/{world.gue}/data/", params={"q": "water"}).text)
    assert "Gefundene Datensätze: 1" in own


def test_dataset_page_describes_fields_licence_coverage_and_downloads(web, world):
    page = _get(web, f"/{world.gue}/data/{TOOL}/pedestrian_counts")
    text = _text(page.text)
    assert "Datenlizenz Deutschland – Zero – Version 2.0" in text
    assert 'href="https://www.govdata.de/dl-de/zero-2-0"' in page.text
    assert "Pedestrians in both directions." in text and "persons" in text
    # first and last reading in Berlin time: 02.03.2026 01:00 – 12.03.2026 00:45
    assert "02.03.2026 01:00 – 12.03.2026 00:45" in text
    assert f"/api/v1/datasets/{world.gue}/{TOOL}/pedestrian_counts" in page.text
    for fmt in ("csv", "json", "geojson"):
        assert f"download?format={fmt}" in page.text
    _assert_no_secret("dataset page", page.text)


def test_private_weather_is_nowhere(web, world):
    for url in (f"/{world.gue}/data/{TOOL}/weather", f"/{world.gue}/data/{TOOL}/weather/download",
                f"/{world.gue}/data/{TOOL}/weather/download?format=json", f"/{world.bi}/data/{TOOL}/pedestrian_counts",
                f"/{world.gue}/data/{TOOL}/nothing"):
        response = _get(web, url, status=404)
        _assert_no_secret(url, _without(response.text, url))   # its language link repeats the address asked for
    # The tool's own public description speaks of "the local weather"; that is the tool, not the dataset.
    tool_description = _tool(TOOL).spec.description
    for url in ("/catalog.ttl", "/catalog.rdf", "/catalog.jsonld", f"/{world.gue}/catalog.ttl",
                f"/{world.gue}/services/{TOOL}", f"/{world.gue}/services/"):
        _assert_no_secret(url, _without(_get(web, url).text, tool_description))


def test_downloads_hold_exactly_the_warehouses_rows(web, world):
    expected = world.count(world.gue, TOOL, "pedestrian_counts")
    assert expected == len(world.pedestrians) == 1920
    response = _get(web, f"/{world.gue}/data/{TOOL}/pedestrian_counts/download?format=csv")
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == expected
    assert len({row["event_id"] for row in rows}) == expected            # no page twice, none lost
    assert [row["observed_at"] for row in rows] == sorted(row["observed_at"] for row in rows)
    as_json = json.loads(_get(web, f"/{world.gue}/data/{TOOL}/pedestrian_counts/download?format=json").text)
    assert len(as_json["rows"]) == expected and as_json["licence"] == "dl-de/zero-2-0"
    geo = json.loads(_get(web, f"/{world.gue}/data/{TOOL}/pedestrian_counts/download?format=geojson").text)
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == expected
    # One day in Berlin: 2026-03-03 00:00 CET is 2026-03-02 23:00 UTC
    start, end = dt.datetime(2026, 3, 2, 23, tzinfo=UTC), dt.datetime(2026, 3, 3, 23, tzinfo=UTC)
    day = _get(web, f"/{world.gue}/data/{TOOL}/pedestrian_counts/download",
               params={"format": "csv", "from": "2026-03-03", "to": "2026-03-03"})
    assert len(list(csv.DictReader(io.StringIO(day.text)))) == world.count(
        world.gue, TOOL, "pedestrian_counts", start, end) == 2 * 24 * 4
    # Byte for byte what the API's export writes for the same instants (the warehouse writes the
    # portal's CSV and JSON, the API's export goes through Python rows).
    for fmt in ("csv", "json"):
        portal = _get(web, f"/{world.gue}/data/{TOOL}/pedestrian_counts/download",
                      params={"format": fmt, "from": "2026-03-03", "to": "2026-03-03"}).content
        api = _get(web, f"/api/v1/datasets/{world.gue}/{TOOL}/pedestrian_counts/export",
                   params={"format": fmt, "from": "2026-03-02T23:00:00Z", "to": "2026-03-03T23:00:00Z"}).content
        assert portal == api, fmt
    bad = web.get(f"/{world.gue}/data/{TOOL}/pedestrian_counts/download", params={"from": "3.3.2026"})
    assert bad.status_code == 422 and "JJJJ-MM-TT" in bad.text
    wrong = web.get(f"/{world.gue}/data/{TOOL}/pedestrian_counts/download", params={"format": "xlsx"})
    assert wrong.status_code == 422


def test_downloads_count_against_the_apis_per_address_quota(world, issuer, settings, warehouse, metadata_store):
    """One address cannot turn the portal's downloads into the flood the API refuses: each
    download is one anonymous query of its address; when the hour's quota is used, 429 with
    Retry-After and a German page, and the API refuses that address too (one count)."""
    settings = dataclasses.replace(settings, api_anonymous_queries_per_hour=3)
    api = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api")
    app = serve.PathDispatch(api, serve.web_app(settings, world.catalogue, api, metadata_store))
    url = f"/{world.gue}/data/{TOOL}/pedestrian_counts/download"
    day = {"format": "csv", "from": "2026-03-03", "to": "2026-03-03"}
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        assert [client.get(url, params=day).status_code for _ in range(2)] == [200, 200]
        assert client.get(f"/api/v1/datasets/{world.gue}/{TOOL}/pedestrian_counts").status_code == 200
        refused = client.get(url, params=day)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "zu viele Downloads" in _text(refused.text)
        assert "set-cookie" not in refused.headers
        assert client.get(f"/api/v1/datasets/{world.gue}/{TOOL}/pedestrian_counts").status_code == 429
        # Pages are not downloads: browsing goes on.
        assert client.get(f"/{world.gue}").status_code == 200


def test_hours_above_a_text_block_take_the_row_path_with_the_same_bytes(web, world, monkeypatch):
    from urbanstack.runtime.hubs.citizen import downloads

    url = f"/{world.gue}/data/{TOOL}/pedestrian_counts/download"
    whole = {fmt: _get(web, url, params={"format": fmt}).content for fmt in ("csv", "json")}
    monkeypatch.setattr(downloads, "block_rows", lambda fields, fmt: 5)    # every hour holds 8 readings
    for fmt in ("csv", "json"):
        assert _get(web, url, params={"format": fmt}).content == whole[fmt], fmt
    assert len(json.loads(whole["json"])["rows"]) == world.count(world.gue, TOOL, "pedestrian_counts")


def test_text_blocks_follow_the_rows_real_size_and_a_refused_block_takes_the_row_path(web, world, monkeypatch):
    from urbanstack.runtime.api.query import QueryError
    from urbanstack.runtime.hubs.citizen import downloads

    url = f"/{world.gue}/data/{TOOL}/pedestrian_counts/download"
    whole = {fmt: _get(web, url, params={"format": fmt}).content for fmt in ("csv", "json")}
    engine = web.app.web.state.citizen.engine
    calls = []
    real = engine.observations_text

    def counting(*args, **kwargs):
        calls.append(kwargs.get("max_rows"))
        return real(*args, **kwargs)

    # A first guess of 100 rows per block (12 hours of 8 readings); the first block's real size
    # then lets the rest go in one query: same bytes, two queries instead of twenty.
    monkeypatch.setattr(downloads, "block_rows", lambda fields, fmt: 100)
    monkeypatch.setattr(engine, "observations_text", counting)
    for fmt in ("csv", "json"):
        calls.clear()
        assert _get(web, url, params={"format": fmt}).content == whole[fmt], fmt
        assert len(calls) == 2 and sum(calls) == 1920, (fmt, calls)

    # The warehouse refusing a block as too large (a row far longer than measured) loses nothing.
    def refusing(*args, **kwargs):
        calls.append(kwargs.get("max_rows"))
        if len(calls) % 2:
            raise QueryError(422, "query_too_expensive", "too large")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "observations_text", refusing)
    for fmt in ("csv", "json"):
        calls.clear()
        assert _get(web, url, params={"format": fmt}).content == whole[fmt], fmt


def _graph(web, url, fmt) -> Graph:
    response = _get(web, url)
    graph = Graph()
    graph.parse(data=response.text, format=fmt, publicID=str(web.base_url))
    return graph


@pytest.mark.parametrize("extension,fmt", [("ttl", "turtle"), ("rdf", "xml"), ("jsonld", "json-ld")])
def test_dcat_catalogue_in_every_serialisation(web, world, extension, fmt):
    graph = _graph(web, f"/{world.gue}/catalog.{extension}", fmt)
    base = str(web.base_url).rstrip("/")
    pedestrians = URIRef(f"{base}/{world.gue}/data/{TOOL}/pedestrian_counts")
    assert (None, DCAT.dataset, pedestrians) in graph
    assert len(list(graph.subjects(RDF.type, DCAT.Dataset))) == 2
    assert graph.value(pedestrians, DCATDE.politicalGeocodingURI) == URIRef(
        "http://dcat-ap.de/def/politicalGeocoding/municipalityKey/05754008")
    distributions = list(graph.objects(pedestrians, DCAT.distribution))
    assert len(distributions) == 3
    for distribution in distributions:
        assert graph.value(distribution, DCTERMS.license) == URIRef("http://dcat-ap.de/def/licenses/dl-zero-de/2.0")
        assert graph.value(distribution, DCAT.downloadURL) == graph.value(distribution, DCAT.accessURL)
    formats = {str(graph.value(d, DCTERMS.format)).rsplit("/", 1)[1] for d in distributions}
    assert formats == {"CSV", "JSON", "GEOJSON"}
    assert str(graph.value(pedestrians, DCTERMS.modified)).startswith("2026-")


def test_dcat_paging_and_modified_since(web, world):
    graph = _graph(web, f"/{world.gue}/catalog.ttl?per_page=1", "turtle")
    (collection,) = graph.subjects(RDF.type, HYDRA.PagedCollection)
    assert int(graph.value(collection, HYDRA.totalItems)) == 2
    assert len(list(graph.subjects(RDF.type, DCAT.Dataset))) == 1
    next_page = graph.value(collection, HYDRA.nextPage)
    assert next_page is not None and "page=2" in str(next_page)
    second = _graph(web, str(next_page).replace(str(web.base_url).rstrip("/"), ""), "turtle")
    (collection,) = second.subjects(RDF.type, HYDRA.PagedCollection)
    assert second.value(collection, HYDRA.nextPage) is None and second.value(collection, HYDRA.previousPage)
    first_ids = set(graph.subjects(RDF.type, DCAT.Dataset))
    assert first_ids.isdisjoint(second.subjects(RDF.type, DCAT.Dataset))
    future = _graph(web, "/catalog.ttl?modified_since=2100-01-01", "turtle")
    (collection,) = future.subjects(RDF.type, HYDRA.PagedCollection)
    assert int(future.value(collection, HYDRA.totalItems)) == 0
    past = _graph(web, "/catalog.ttl?modified_since=2000-01-01T00:00:00Z", "turtle")
    assert len(list(past.subjects(RDF.type, DCAT.Dataset))) >= 2
    assert web.get("/catalog.ttl?modified_since=yesterday").status_code == 422


def test_accessibility_feedback_reaches_the_municipalitys_staff(web, world):
    from hub_sessions import signed_in_cookie

    page = _get(web, f"/{world.gue}/accessibility")
    assert "Erklärung zur Barrierefreiheit" in page.text and "schlichtungsstelle" in page.text.casefold()
    empty = web.post(f"/{world.gue}/accessibility", data={"message": "  "})
    assert empty.status_code == 422 and 'aria-invalid="true"' in empty.text and "set-cookie" not in empty.headers
    message = f"Die Tabelle auf der Startseite ist zu breit {uuid.uuid4().hex[:6]}"
    sent = web.post(f"/{world.gue}/accessibility", data={"message": message, "email": "anna@example.org",
                                                         "page": "/start"}, follow_redirects=False)
    assert sent.status_code == 303 and "sent=1" in sent.headers["location"] and "set-cookie" not in sent.headers
    assert "Vielen Dank" in _get(web, sent.headers["location"]).text
    foreign = web.post(f"/{world.gue}/accessibility", data={"message": "x"}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    # The municipality's administrator sees it in the Gov Hub; Bielefeld's does not.
    name, token, _ = signed_in_cookie(web.store, world.gue, ["gov-admin"])
    staff = web.get(f"/gov/{world.gue}/feedback", cookies={name: token})
    assert staff.status_code == 200 and message in staff.text and "anna@example.org" in staff.text
    name, token, _ = signed_in_cookie(web.store, world.bi, ["gov-admin"], subject="bi-admin")
    other = web.get(f"/gov/{world.bi}/feedback", cookies={name: token})
    assert other.status_code == 200 and message not in other.text
    web.cookies.clear()


def test_imprint_privacy_and_services(web, world):
    imprint = _text(_get(web, f"/{world.gue}/imprint").text)
    assert "Nordrhein-Westfalen" in imprint and "opendata@guetersloh.example" in imprint
    privacy = _text(_get(web, f"/{world.gue}/privacy").text)
    assert "keine Cookies" in privacy
    services = _text(_get(web, f"/{world.gue}/services/").text)
    assert "Passantenfrequenz & Wetter" in services
    # the tool's description in the page's language (spec.descriptionDe / spec.description)
    assert "Passantenfrequenzen in der Innenstadt, verknüpft mit dem Wetter vor Ort." in services
    assert "joined with the local weather" not in services
    assert "<p>Pedestrian frequencies in the city centre joined with the local weather.</p>" in \
        _get(web, f"/{world.gue}/services/?lang=en").text
    assert "Pegel" not in services or _tool(PEGEL).spec.audience.value != "gov"
    _get(web, f"/{world.gue}/services/{PEGEL}", status=404 if _tool(PEGEL).spec.audience.value == "gov" else 200)
    _get(web, "/no-such-town/", status=404)


def test_published_dashboards_are_listed_and_unpublishing_removes_them(web, world):
    from urbanstack.runtime.store import Actor

    board = web.store.dashboards.create(world.gue, Actor("sub-1", "Erika"), "Passanten am Samstag", {"panels": []})
    hidden = web.store.dashboards.create(world.gue, Actor("sub-1", "Erika"), "Interner Entwurf", {"panels": []})
    before = _get(web, f"/{world.gue}/").text          # now in the page cache
    assert "Passanten am Samstag" not in before
    web.store.dashboards.publish(board.id)
    page = _get(web, f"/{world.gue}/").text            # at once: no waiting for a cache to expire
    assert "Passanten am Samstag" in page and f"/{world.gue}/dashboards/{board.id}" in page
    assert "Interner Entwurf" not in page and hidden.id not in page
    assert "1" in _text(_get(web, "/").text)           # the region page counts it at once too
    web.store.dashboards.unpublish(board.id)
    assert "Passanten am Samstag" not in _get(web, f"/{world.gue}/").text
    assert f"/{world.gue}/dashboards/{board.id}" not in _get(web, "/").text


def test_cached_pages_answer_etags_and_stay_per_municipality(web, world):
    from urbanstack.runtime.store import Actor

    hub = web.app.web.state.citizen
    first = _get(web, f"/{world.gue}/")
    etag = first.headers["etag"]
    again = web.get(f"/{world.gue}/", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert hub.pages.get((f"/{world.gue}/", b"")) is not None     # served from the page cache
    # Browsers ask for gzip and get it from the cache; a client that does not gets the same page plain.
    assert first.headers["content-encoding"] == "gzip" and "Accept-Encoding" in first.headers["vary"]
    plain = web.get(f"/{world.gue}/", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == first.text
    assert plain.headers["etag"] != etag and int(plain.headers["content-length"]) == len(plain.content)
    assert web.get(f"/{world.gue}/", headers={"Accept-Encoding": "identity",
                                               "If-None-Match": plain.headers["etag"]}).status_code == 304
    # Bielefeld's cached pages are not Gütersloh's, and a change in Bielefeld leaves Gütersloh's alone.
    bielefeld = _get(web, f"/{world.bi}/").text
    assert "<h1>Bielefeld</h1>" in bielefeld and "pedestrian_counts" not in bielefeld
    board = web.store.dashboards.create(world.bi, Actor("sub-2", "Bernd"), "Sparrenburg live", {"panels": []})
    web.store.dashboards.publish(board.id)
    try:
        assert "Sparrenburg live" in _get(web, f"/{world.bi}/").text
        assert web.get(f"/{world.gue}/", headers={"If-None-Match": etag}).status_code == 304
        assert "Sparrenburg live" not in _get(web, f"/{world.gue}/").text
        assert "Sparrenburg live" not in _get(web, f"/{world.gue}/", params={"lang": "en"}).text
    finally:
        web.store.dashboards.delete(board.id)
    assert "Sparrenburg live" not in _get(web, f"/{world.bi}/").text     # deleting takes it off at once


def test_a_dataset_taken_out_of_open_data_leaves_the_cached_pages_at_once(web, world):
    pages = (f"/{world.gue}/", f"/{world.gue}/data/", "/data/", f"/{world.gue}/data/{PEGEL}/water_levels")
    for path in pages:
        assert "water_levels" in _get(web, path).text
    catalogue = world.catalogue
    gue = world.municipalities[0]
    spec = gue.spec.model_copy(update={"shares": [s for s in gue.spec.shares if s.dataset != "water_levels"]})
    closed = [gue.model_copy(update={"spec": spec}), *world.municipalities[1:]]
    tools = catalogue.tools()
    catalogue.replace(closed, tools)
    try:
        for path in pages[:3]:
            assert "water_levels" not in _get(web, path).text, path
        _get(web, pages[3], status=404)
    finally:
        catalogue.replace(world.municipalities, tools)
    assert "water_levels" in _get(web, pages[3]).text


def test_new_readings_show_on_the_cached_pages(web, world):
    """New readings change the dataset page's last update and the start page within the stated
    bound (``recheck_seconds`` + ``data_check_seconds``, made short here)."""
    import time

    hub = web.app.web.state.citizen
    hub.recheck_seconds, hub.data_check_seconds = 0.2, 0.2
    path = f"/{world.gue}/data/{PEGEL}/water_levels"
    try:
        before = _get(web, path)
        newest = dt.datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
        event_id = f"p-new-{uuid.uuid4().hex}"    # a block of its own (the sink's insert deduplication)
        assert "01.12.2026" not in _text(before.text)
        world._insert(world.gue, PEGEL, "water_levels", [
            {"event_id": event_id, "source": "pegelonline", "sensor_id": "dalke", "observed_at": newest,
             "lon": None, "lat": None, "water_level": 140.0, "station_name": "Dalke"}])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            page = _get(web, path)
            if "01.12.2026" in _text(page.text):
                break
            time.sleep(0.1)
        assert "01.12.2026" in _text(page.text), _text(page.text)[:1500]
        assert page.headers["etag"] != before.headers["etag"]
    finally:
        world.warehouse.command(f"ALTER TABLE `{naming.database(world.gue)}`.`{naming.table(PEGEL, 'water_levels')}` "
                                "DELETE WHERE startsWith(event_id, 'p-new-') SETTINGS mutations_sync = 1")
        hub.recheck_seconds, hub.data_check_seconds = 1.0, 5.0
        hub.invalidate()


def test_the_page_cache_is_bounded():
    from urbanstack.runtime.hubs.citizen.pagecache import Entry, PageStore

    store = PageStore(max_entries=3, max_bytes=25)
    for i in range(5):
        store.put((f"/{i}/", b""), Entry(scope=None, stamp=(0, 0, 0), status=200, headers=[], body=b"x" * 10,
                                         etag=b'"e"'))
    assert store.size == (2, 20)            # the byte cap bites first; the oldest went
    assert store.get(("/0/", b"")) is None and store.get(("/4/", b"")) is not None


def test_no_page_sets_a_cookie_even_when_a_route_tries(world):
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    from urbanstack.runtime.hubs.citizen import NoCookies

    app = FastAPI()

    @app.get("/{slug}/x")
    def x(slug: str):
        response = PlainTextResponse("x")
        response.set_cookie("tracker", "1")
        return response

    with TestClient(NoCookies(app)) as client:
        assert "set-cookie" not in client.get("/town/x").headers
        assert "set-cookie" in client.get("/gov/x").headers      # the Gov Hub's session cookie stays possible


# DCAT-AP.de SHACL ------------------------------------------------------------------

SHAPES = ROOT / "tests" / "fixtures" / "dcat-ap-de"


@pytest.fixture(scope="module")
def shapes():
    """The validator's v2.0 profile with conventions (see tests/fixtures/dcat-ap-de/README.md)."""
    graph = Graph()
    for name in ("dcat-ap_2.1.1_shacl_shapes.ttl", "dcat-ap-spec-german-messages.ttl",
                 "dcat-ap-spec-german-additions.ttl", "dcat-ap-de-deprecated.ttl", "dcat-ap-konventionen.ttl"):
        graph.parse(SHAPES / name, format="turtle")
    # K12/13: a GovData contributor ID exists only once an installation registers with GovData.
    graph.parse(data="@prefix sh: <http://www.w3.org/ns/shacl#> . "
                     "<http://dcat-ap.de/def/dcatde/Konv12_13_contributorID_v_List> sh:deactivated true .",
                format="turtle")
    return graph


@pytest.fixture(scope="module")
def vocabularies():
    graph = Graph()
    graph.parse(SHAPES / "dcat-ap-de-licenses-open.rdf", format="xml")
    graph.parse(SHAPES / "vocabulary-excerpt.ttl", format="turtle")
    return graph


def _violations(data: Graph, shapes: Graph, vocabularies: Graph) -> tuple[bool, list[str]]:
    from pyshacl import validate

    # As the official validator does with the vocabularies it imports: they join the data graph.
    conforms, report, _text_report = validate(data + vocabularies, shacl_graph=shapes, inference="none",
                                              abort_on_first=False, allow_warnings=True)
    SH = Namespace("http://www.w3.org/ns/shacl#")
    found = []
    for result in report.subjects(RDF.type, SH.ValidationResult):
        if report.value(result, SH.resultSeverity) == SH.Violation:
            messages = [str(m) for m in report.objects(result, SH.resultMessage)]
            found.append(f"{report.value(result, SH.focusNode)} {report.value(result, SH.resultPath)}: "
                         f"{' / '.join(messages)[:300]}")
    return conforms, found


@pytest.mark.parametrize("path", ["/catalog.{}", "/{gue}/catalog.{}"])
@pytest.mark.parametrize("extension,fmt", [("ttl", "turtle"), ("rdf", "xml"), ("jsonld", "json-ld")])
def test_dcat_passes_the_official_dcat_ap_de_shapes(web, world, shapes, vocabularies, path, extension, fmt):
    data = _graph(web, path.format(extension, gue=world.gue), fmt)
    assert len(list(data.subjects(RDF.type, DCAT.Dataset))) >= 2
    conforms, violations = _violations(data, shapes, vocabularies)
    assert violations == [] and conforms, "\n".join(violations)


def test_a_catalogue_without_licence_fails_the_shapes(web, world, shapes, vocabularies):
    data = _graph(web, f"/{world.gue}/catalog.ttl", "turtle")
    data.remove((None, DCTERMS.license, None))
    conforms, violations = _violations(data, shapes, vocabularies)
    assert not conforms
    assert any("K31" in v and "license" in v for v in violations), violations
