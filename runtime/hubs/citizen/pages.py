"""The Citizen Hub's pages: region, municipality start page, open-data catalogue, dataset
pages, city services, accessibility statement with its feedback form, imprint, privacy."""

from __future__ import annotations

import logging
from math import ceil

from fastapi import APIRouter, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse

from urbanstack.runtime.store.dashboards import InvalidInput
from urbanstack.runtime.web import i18n
from urbanstack.runtime.web.i18n import N_

from . import metadata
from urbanstack.operator.ags import LAENDER
from urbanstack.toolkit import pages as tool_pages

from .app import CONCILIATION_BODY_URL, CitizenHub, set_language

log = logging.getLogger("urbanstack.citizenhub.pages")
PER_PAGE = 20
FIELD_ERRORS = {
    "message": N_("Please describe the barrier you met."),
    "name": N_("The name may have at most 200 characters."),
    "email": N_("Enter an email address like name@example.org, or leave it empty."),
}
MAX_FORM_BYTES = 20_000


def _dataset_view(hub: CitizenHub, dataset) -> dict:
    municipality = hub.catalogue.municipality(dataset.owner)
    return {"info": dataset, "title": metadata.title(dataset), "themes": metadata.themes(dataset),
            "keywords": metadata.keywords(dataset), "coverage": hub.coverage(dataset),
            "municipality": municipality,
            "url": f"/{dataset.owner}/data/{dataset.tool}/{dataset.name}"}


def _catalogue(hub: CitizenHub, request: Request, slug: str | None):
    params = request.query_params
    query = (params.get("q") or "").strip()[:200]
    theme = params.get("theme") or ""
    owner = slug or (params.get("municipality") or "")
    if theme and theme not in metadata.THEMES:
        theme = ""
    if owner and hub.catalogue.municipality(owner) is None:
        owner = ""
    datasets = [d for d in hub.open_datasets(owner or None)
                if (not query or metadata.matches(d, query)) and (not theme or theme in metadata.themes(d))]
    try:
        page = max(1, int(params.get("page") or 1))
    except ValueError:
        page = 1
    pages = max(1, ceil(len(datasets) / PER_PAGE))
    page = min(page, pages)
    shown = [_dataset_view(hub, d) for d in datasets[(page - 1) * PER_PAGE: page * PER_PAGE]]
    themes_present = sorted({t for d in hub.open_datasets(slug) for t in metadata.themes(d)})
    return dict(datasets=shown, total=len(datasets), page=page, pages=pages, query=query, theme=theme,
                owner=owner, themes_present=themes_present)


def router(hub: CitizenHub) -> APIRouter:
    routes = APIRouter()

    @routes.get("/", response_class=HTMLResponse)
    def region(request: Request):
        set_language(request)
        hub.check_data()
        return _region(request)

    def _region(request: Request):
        municipalities = hub.municipalities()

        def figures():
            datasets = hub.open_datasets()
            return {"municipalities": len(municipalities),
                    "residents": sum(hub.residents(m) or 0 for m in municipalities),
                    "datasets": len(datasets),
                    "readings": sum(hub.readings_last_day(d) for d in datasets)}

        rows = [{"municipality": m, "datasets": len(hub.open_datasets(m.slug)),
                 "dashboards": len(hub.published_dashboards(m.slug)), "residents": hub.residents(m)}
                for m in municipalities]
        return hub.page(request, "citizen/region.html", figures=hub.cache.get(("figures",), figures), rows=rows)

    @routes.get("/data/", response_class=HTMLResponse)
    def catalogue(request: Request):
        set_language(request)
        hub.check_data()
        return hub.page(request, "citizen/catalogue.html", municipalities=hub.municipalities(),
                        **_catalogue(hub, request, None))

    @routes.get("/{slug}/", response_class=HTMLResponse)
    def start(request: Request, slug: str):
        set_language(request)
        municipality = hub.municipality(slug)
        hub.check_data(slug)
        return hub.page(
            request, "citizen/start.html", municipality=municipality, slug=slug,
            datasets=[_dataset_view(hub, d) for d in hub.open_datasets(slug)],
            dashboards=hub.published_dashboards(slug), services=hub.services(municipality),
            residents=hub.residents(municipality))

    @routes.get("/{slug}/data/", response_class=HTMLResponse)
    def municipality_catalogue(request: Request, slug: str):
        set_language(request)
        municipality = hub.municipality(slug)
        hub.check_data(slug)
        return hub.page(
            request, "citizen/catalogue.html", municipality=municipality, slug=slug,
            municipalities=[municipality], **_catalogue(hub, request, slug))

    @routes.get("/{slug}/data/{tool}/{name}", response_class=HTMLResponse)
    def dataset_page(request: Request, slug: str, tool: str, name: str):
        set_language(request)
        municipality = hub.municipality(slug)
        dataset = hub.open_dataset(slug, tool, name)
        hub.check_data(slug)
        return hub.page(
            request, "citizen/dataset.html", municipality=municipality, slug=slug,
            dataset=_dataset_view(hub, dataset), formats=metadata.FORMATS,
            api=f"/api/v1/datasets/{slug}/{tool}/{name}")

    @routes.get("/{slug}/services/", response_class=HTMLResponse)
    def services(request: Request, slug: str):
        set_language(request)
        municipality = hub.municipality(slug)
        return hub.page(request, "citizen/services.html", municipality=municipality, slug=slug,
                        services=hub.services(municipality))

    @routes.get("/{slug}/services/{tool}", response_class=HTMLResponse)
    def service(request: Request, slug: str, tool: str):
        set_language(request)
        municipality = hub.municipality(slug)
        city_tool = hub.service(municipality, tool)
        datasets = [_dataset_view(hub, d) for d in hub.open_datasets(slug) if d.tool == tool]
        return hub.page(request, "citizen/service.html", municipality=municipality, slug=slug, tool=city_tool,
                        datasets=datasets, **_tool_page(hub, request, municipality, tool, ""))

    @routes.get("/{slug}/services/{tool}/{path}", response_class=HTMLResponse)
    def service_page(request: Request, slug: str, tool: str, path: str):
        set_language(request)
        municipality = hub.municipality(slug)
        city_tool = hub.service(municipality, tool)
        found = _tool_page(hub, request, municipality, tool, path)
        if not found["page"] or not path:
            raise HTTPException(404, "no such page")
        return hub.page(request, "citizen/service.html", municipality=municipality, slug=slug, tool=city_tool,
                        datasets=None, **found)

    @routes.get("/{slug}/accessibility", response_class=HTMLResponse)
    def accessibility(request: Request, slug: str):
        set_language(request)
        municipality = hub.municipality(slug)
        return hub.page(request, "citizen/accessibility.html", municipality=municipality, slug=slug,
                        sent=request.query_params.get("sent") == "1", errors={}, values={},
                        conciliation=CONCILIATION_BODY_URL)

    @routes.post("/{slug}/accessibility", response_class=HTMLResponse)
    async def feedback(request: Request, slug: str):
        set_language(request)
        municipality = hub.municipality(slug)
        origin = request.headers.get("origin")
        if origin and origin != "null" and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise HTTPException(403, "foreign origin")
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            raise HTTPException(413, "too large")
        form = await request.form()
        values = {key: str(form.get(key) or "") for key in ("message", "name", "email", "page", "website")}
        link = i18n.translations(request.state.lang).gettext
        if values["website"]:   # a field people do not see: only robots fill it in
            return RedirectResponse(_sent_url(slug, request), 303)
        errors = {}
        try:
            hub.store.feedback.add(slug, values["message"], name=values["name"], email=values["email"],
                                   page=values["page"])
        except InvalidInput as problem:
            field, _, _ = str(problem).partition(":")
            field = field if field in FIELD_ERRORS else "message"
            errors[field] = link(FIELD_ERRORS[field])
        if errors:
            return hub.page(request, "citizen/accessibility.html", status=422, municipality=municipality, slug=slug,
                            sent=False, errors=errors, values=values, conciliation=CONCILIATION_BODY_URL)
        log.info("accessibility feedback stored for %s", slug)
        return RedirectResponse(_sent_url(slug, request), 303)

    @routes.get("/{slug}/imprint", response_class=HTMLResponse)
    def imprint(request: Request, slug: str):
        set_language(request)
        municipality = hub.municipality(slug)
        return hub.page(request, "citizen/imprint.html", municipality=municipality, slug=slug,
                        land=LAENDER.get(municipality.spec.ags[:2], ""))

    @routes.get("/{slug}/privacy", response_class=HTMLResponse)
    def privacy(request: Request, slug: str):
        set_language(request)
        municipality = hub.municipality(slug)
        return hub.page(request, "citizen/privacy.html", municipality=municipality, slug=slug)

    return routes


def _tool_page(hub: CitizenHub, request: Request, municipality, tool: str, path: str) -> dict:
    """The page the tool contributes at ``path`` (urbanstack.toolkit.pages), built as nobody: open data only."""
    found = tool_pages.find_page(hub.catalogue, municipality, tool, "citizen", path)
    if found is None:
        return {"page": None, "page_template": None, "data": None, "tool_nav": []}
    city_tool, pages, page = found
    base = f"/{municipality.slug}/services/{tool}"
    ctx = tool_pages.PageContext(hub="citizen", municipality=municipality, tool=city_tool, lang=request.state.lang,
                                 principal=None, engine=hub.engine, catalogue=hub.catalogue,
                                 url=lambda p: base + (f"/{p.lstrip('/')}" if p.strip("/") else ""))
    nav = [{"title": p.title, "url": ctx.url(p.path), "path": p.path} for p in pages.pages_of("citizen")]
    return {"page": page, "page_template": pages.template_name(page), "data": page.build(ctx), "tool_nav": nav}


def _sent_url(slug: str, request: Request) -> str:
    lang = "&lang=en" if request.state.lang == "en" else ""
    return f"/{slug}/accessibility?sent=1{lang}#feedback-sent"
