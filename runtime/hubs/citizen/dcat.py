"""The open-data catalogue as DCAT-AP.de 2.0 (Turtle, RDF/XML, JSON-LD), written by rdflib.

``/catalog.{ttl,rdf,jsonld}`` lists every municipality's open datasets,
``/{slug}/catalog.{…}`` one municipality's. Both page with Hydra (``hydra:PagedCollection``
with ``totalItems``, ``itemsPerPage``, ``firstPage``/``lastPage``/``nextPage``/``previousPage``;
``?page=`` from 1, ``?per_page=`` up to 100) and filter with ``?modified_since=`` (ISO 8601
date or time; datasets whose newest data arrived at or after it).

Per dataset: title, description, keywords, EU data themes, publisher (the municipality,
``foaf:Agent`` of type LocalAuthority) and contact point (``vcard:Organization`` with the
municipality's first administrator address), ``dcatde:politicalGeocodingURI`` of its AGS with
level municipality, temporal coverage and ``dct:modified`` from the warehouse, update
frequency, and one distribution per download format (CSV, JSON, GeoJSON), each with the
licence ``dl-zero-de/2.0``, the EU file type, the IANA media type and the same URL as
``downloadURL`` and ``accessURL`` (a plain download). The Data Hub API is a
``dcat:DataService`` serving every dataset.
"""

from __future__ import annotations

from datetime import datetime, timezone
from math import ceil
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import Response
from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, XSD

from urbanstack.runtime.web.i18n import N_

from .app import LICENCE_URI, CitizenHub, set_language
from . import metadata

DCATDE = Namespace("http://dcat-ap.de/def/dcatde/")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
ADMS_PUBLISHER = "http://purl.org/adms/publishertype/LocalAuthority"
IANA = "https://www.iana.org/assignments/media-types/"
MAX_PER_PAGE = 100
SERIALISATIONS = {
    "ttl": ("turtle", "text/turtle; charset=utf-8"),
    "rdf": ("xml", "application/rdf+xml; charset=utf-8"),
    "jsonld": ("json-ld", "application/ld+json"),
}


def parse_modified_since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(422, N_("modified_since: use an ISO 8601 date or time, e.g. 2026-03-01 or "
                                    "2026-03-01T12:00:00Z.")) from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _agent(graph: Graph, node: URIRef, name: str, homepage: str) -> URIRef:
    graph.add((node, RDF.type, FOAF.Agent))
    graph.add((node, RDF.type, FOAF.Organization))
    graph.add((node, FOAF.name, Literal(name, lang="de")))
    graph.add((node, FOAF.homepage, URIRef(homepage)))
    graph.add((node, DCTERMS.type, URIRef(ADMS_PUBLISHER)))
    return node


def catalog_graph(hub: CitizenHub, base: str, slug: str | None = None, *, page: int = 1,
                  per_page: int = MAX_PER_PAGE, modified_since: datetime | None = None,
                  page_url: str | None = None) -> Graph:
    """The catalogue (of ``slug``, or of the installation) as an rdflib graph."""
    base = base.rstrip("/")
    graph = Graph()
    for prefix, namespace in (("dcat", DCAT), ("dct", DCTERMS), ("foaf", FOAF), ("dcatde", DCATDE),
                              ("vcard", VCARD), ("hydra", HYDRA)):
        graph.bind(prefix, namespace)
    datasets = hub.open_datasets(slug)
    if modified_since is not None:
        datasets = [d for d in datasets if (hub.coverage(d).updated or datetime.min.replace(tzinfo=timezone.utc))
                    >= modified_since]
    total = len(datasets)
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    pages = max(1, ceil(total / per_page))
    page = max(1, min(page, pages))
    shown = datasets[(page - 1) * per_page: page * per_page]

    home = f"{base}/{slug}/" if slug else f"{base}/"
    catalog = URIRef(f"{base}/{slug}/catalog" if slug else f"{base}/catalog")
    municipality = hub.catalogue.municipality(slug) if slug else None
    name = municipality.spec.display_name if municipality else "Urban Stack"
    graph.add((catalog, RDF.type, DCAT.Catalog))
    graph.add((catalog, DCTERMS.title, Literal(f"Offene Daten – {name}", lang="de")))
    graph.add((catalog, DCTERMS.description, Literal(
        f"Offene Daten von {name}: Messwerte der Stadt, frei nutzbar unter der Datenlizenz Deutschland – Zero."
        if municipality else "Offene Daten der Kommunen dieser Urban-Stack-Installation.", lang="de")))
    graph.add((catalog, DCTERMS.language, URIRef(metadata.LANGUAGE + "DEU")))
    graph.add((catalog, FOAF.homepage, URIRef(home)))
    graph.add((catalog, DCTERMS.license, URIRef(LICENCE_URI)))
    graph.add((catalog, DCAT.themeTaxonomy, URIRef(metadata.DATA_THEME.rstrip("/"))))
    graph.add((catalog, DCTERMS.publisher, _agent(graph, URIRef(f"{home}#publisher"), name, home)))
    if municipality is not None:
        graph.add((catalog, DCTERMS.spatial, URIRef(metadata.political_geocoding(municipality.spec.ags))))
    modified = [c.updated for c in (hub.coverage(d) for d in datasets) if c.updated]
    if modified:
        graph.add((catalog, DCTERMS.modified, Literal(max(modified), datatype=XSD.dateTime)))

    api = URIRef(f"{base}/api/v1")
    graph.add((catalog, DCAT.service, api))
    graph.add((api, RDF.type, DCAT.DataService))
    graph.add((api, DCTERMS.title, Literal("Urban Data Hub API", lang="de")))
    graph.add((api, DCAT.endpointURL, URIRef(f"{base}/api/v1/datasets")))
    graph.add((api, DCAT.endpointDescription, URIRef(f"{base}/openapi.json")))
    graph.add((api, DCTERMS.license, URIRef(LICENCE_URI)))

    for info in shown:
        node = _dataset(graph, hub, base, info)
        graph.add((catalog, DCAT.dataset, node))
        graph.add((api, DCAT.servesDataset, node))

    collection = URIRef(page_url or str(catalog))
    graph.add((collection, RDF.type, HYDRA.PagedCollection))
    graph.add((collection, HYDRA.totalItems, Literal(total, datatype=XSD.integer)))
    graph.add((collection, HYDRA.itemsPerPage, Literal(per_page, datatype=XSD.integer)))

    def at(number: int) -> URIRef:
        query = {"page": number}
        if per_page != MAX_PER_PAGE:
            query["per_page"] = per_page
        if modified_since is not None:
            query["modified_since"] = modified_since.isoformat().replace("+00:00", "Z")
        return URIRef(f"{str(catalog)}.ttl?{urlencode(query)}") if page_url is None else \
            URIRef(f"{page_url.split('?', 1)[0]}?{urlencode(query)}")

    graph.add((collection, HYDRA.firstPage, at(1)))
    graph.add((collection, HYDRA.lastPage, at(pages)))
    if page < pages:
        graph.add((collection, HYDRA.nextPage, at(page + 1)))
    if page > 1:
        graph.add((collection, HYDRA.previousPage, at(page - 1)))
    return graph


def _dataset(graph: Graph, hub: CitizenHub, base: str, info) -> URIRef:
    municipality = hub.catalogue.municipality(info.owner)
    page = f"{base}/{info.owner}/data/{info.tool}/{info.name}"
    node = URIRef(page)
    home = f"{base}/{info.owner}/"
    graph.add((node, RDF.type, DCAT.Dataset))
    graph.add((node, DCTERMS.title, Literal(metadata.title(info), lang="de")))
    graph.add((node, DCTERMS.description, Literal(info.description or metadata.title(info), lang="de")))
    graph.add((node, DCTERMS.identifier, Literal(page)))
    graph.add((node, DCAT.landingPage, URIRef(page)))
    for word in metadata.keywords(info):
        graph.add((node, DCAT.keyword, Literal(word, lang="de")))
    for theme in metadata.themes(info):
        graph.add((node, DCAT.theme, URIRef(metadata.DATA_THEME + theme)))
    graph.add((node, DCTERMS.language, URIRef(metadata.LANGUAGE + "DEU")))
    graph.add((node, DCTERMS.accrualPeriodicity, URIRef(metadata.FREQUENCY + "CONT")))
    name = municipality.spec.display_name if municipality else info.owner
    graph.add((node, DCTERMS.publisher, _agent(graph, URIRef(f"{home}#publisher"), name, home)))
    contact = BNode()
    graph.add((contact, RDF.type, VCARD.Organization))
    graph.add((contact, RDF.type, VCARD.Kind))
    graph.add((contact, VCARD.fn, Literal(f"{name} – Offene Daten", lang="de")))
    if municipality is not None and municipality.spec.admins:
        graph.add((contact, VCARD.hasEmail, URIRef(f"mailto:{municipality.spec.admins[0]}")))
    graph.add((contact, VCARD.hasURL, URIRef(f"{home}accessibility")))
    graph.add((node, DCAT.contactPoint, contact))
    if municipality is not None:
        place = URIRef(metadata.political_geocoding(municipality.spec.ags))
        graph.add((node, DCATDE.politicalGeocodingURI, place))
        graph.add((node, DCATDE.politicalGeocodingLevelURI, URIRef(metadata.LEVEL_MUNICIPALITY)))
        graph.add((node, DCTERMS.spatial, place))
    coverage = hub.coverage(info)
    if coverage.first is not None:
        period = BNode()
        graph.add((period, RDF.type, DCTERMS.PeriodOfTime))
        graph.add((period, DCAT.startDate, Literal(coverage.first, datatype=XSD.dateTime)))
        graph.add((period, DCAT.endDate, Literal(coverage.last, datatype=XSD.dateTime)))
        graph.add((node, DCTERMS.temporal, period))
    if coverage.updated is not None:
        graph.add((node, DCTERMS.modified, Literal(coverage.updated, datatype=XSD.dateTime)))
    for fmt in metadata.FORMATS:
        url = URIRef(f"{page}/download?format={fmt.key}")
        distribution = URIRef(f"{page}#{fmt.key}")
        graph.add((node, DCAT.distribution, distribution))
        graph.add((distribution, RDF.type, DCAT.Distribution))
        graph.add((distribution, DCTERMS.title, Literal(f"{metadata.title(info)} ({fmt.label})", lang="de")))
        graph.add((distribution, DCAT.accessURL, url))
        graph.add((distribution, DCAT.downloadURL, url))
        graph.add((distribution, DCTERMS.format, URIRef(metadata.FILE_TYPE + fmt.file_type)))
        graph.add((distribution, DCAT.mediaType, URIRef(IANA + fmt.media_type)))
        graph.add((distribution, DCTERMS.license, URIRef(LICENCE_URI)))
        if coverage.updated is not None:
            graph.add((distribution, DCTERMS.modified, Literal(coverage.updated, datatype=XSD.dateTime)))
    return node


def router(hub: CitizenHub) -> APIRouter:
    routes = APIRouter()

    def answer(request: Request, slug: str | None, extension: str) -> Response:
        set_language(request)
        if extension not in SERIALISATIONS:
            raise HTTPException(404, "unknown format")
        if slug is not None:
            hub.municipality(slug)
        params = request.query_params
        try:
            page = int(params.get("page") or 1)
            per_page = int(params.get("per_page") or MAX_PER_PAGE)
        except ValueError:
            raise HTTPException(422, N_("page and per_page must be whole numbers.")) from None
        since = parse_modified_since(params.get("modified_since"))
        base = str(request.base_url).rstrip("/")
        page_url = str(request.url)
        graph = catalog_graph(hub, base, slug, page=page, per_page=per_page, modified_since=since,
                              page_url=page_url)
        fmt, media = SERIALISATIONS[extension]
        body = graph.serialize(format=fmt)
        return Response(body.encode("utf-8") if isinstance(body, str) else body, media_type=media,
                        headers={"Cache-Control": "public, max-age=300"})

    @routes.get("/catalog.{extension}")
    def installation(request: Request, extension: str):
        return answer(request, None, extension)

    @routes.get("/{slug}/catalog.{extension}")
    def municipality(request: Request, slug: str, extension: str):
        return answer(request, slug, extension)

    return routes
