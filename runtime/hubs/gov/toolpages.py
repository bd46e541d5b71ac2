"""Pages City Tools contribute to the Gov Hub: ``/gov/<slug>/tools/<tool>/`` and ``…/<path>``.

The pages are described by the tool (:mod:`urbanstack.toolkit.pages`); this router does what
every Gov Hub route does — sign-in, the URL's municipality, the page's role — then builds
the page's data with the session's principal and renders its template inside the hub's
layout (``gov/tool_page.html``). A tool the municipality has not switched on, or a page the
tool does not have, is 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse

from urbanstack.runtime.web.sessions import Session
from urbanstack.toolkit import pages as tool_pages

from .app import GovHub, staff_session


def gov_pages(hub: GovHub, municipality, tool: str, session: Session) -> list[dict]:
    """Links to the Gov Hub pages of ``tool`` that ``session`` may see (for navigation)."""
    found = tool_pages.find_page(hub.catalogue, municipality, tool, "gov")
    pages = tool_pages.pages_for(tool) if found else None
    if pages is None:
        return []
    return [{"title": p.title, "url": hub.url(municipality.slug, f"tools/{tool}/{p.path}"), "path": p.path}
            for p in pages.pages_of("gov") if session.has(p.role)]


def router(hub: GovHub) -> APIRouter:
    routes = APIRouter(prefix=hub.prefix)

    @routes.get("/{slug}/tools/{name}/", response_class=HTMLResponse)
    @routes.get("/{slug}/tools/{name}/{path}", response_class=HTMLResponse)
    def tool_page(request: Request, slug: str, name: str, path: str = "",
                  session: Session = Depends(staff_session(hub))):
        municipality = hub.municipality(slug)
        found = tool_pages.find_page(hub.catalogue, municipality, name, "gov", path)
        if found is None:
            raise HTTPException(404, "no such page")
        tool, pages, page = found
        if not session.has(page.role):
            raise HTTPException(403, "role")
        ctx = tool_pages.PageContext(hub="gov", municipality=municipality, tool=tool, lang=request.state.lang,
                                     principal=session.principal, engine=hub.engine, catalogue=hub.catalogue,
                                     url=lambda p: hub.url(slug, f"tools/{name}/{p.lstrip('/')}"))
        return hub.page(request, "gov/tool_page.html", municipality=municipality, slug=slug, tool=tool,
                        page=page, page_template=pages.template_name(page), data=page.build(ctx),
                        tool_nav=gov_pages(hub, municipality, name, session))

    return routes
