"""The start page: the municipality's datasets, dashboards, tools and the operator's status in plain words."""

from __future__ import annotations

from fastapi import Request

from urbanstack.runtime.web import i18n
from urbanstack.runtime.web.i18n import N_

# What each backend condition means for staff, in the hub's message-id language (English; German in the catalogue).
CONDITION_TEXT = {
    "IdentityReady": N_("Sign-in and user accounts"),
    "StreamingReady": N_("Data streams"),
    "WarehouseReady": N_("Database"),
    "RuntimeReady": N_("City Tools runtime"),
}
PHASE_TEXT = {
    "Ready": N_("Everything is set up and working."),
    "Pending": N_("The municipality is waiting to be set up."),
    "Provisioning": N_("The municipality is being set up. This usually takes a minute."),
    "Degraded": N_("Something does not work right now. The platform keeps trying to repair it."),
    "Suspended": N_("The municipality is suspended. Data is kept; sign-in and data flow are paused."),
    "Failed": N_("The setup failed. The platform team has been told in the status below."),
    "Deleting": N_("The municipality is being removed."),
}


def status_summary(municipality) -> dict:
    """The operator's status as the start page shows it: phase sentence and one line per backend."""
    status = municipality.status
    phase = status.phase.value if status is not None and status.phase is not None else "Pending"
    stale = (status is not None and status.observed_generation is not None
             and municipality.metadata.generation is not None
             and status.observed_generation < municipality.metadata.generation)
    lines = []
    for condition in (status.conditions if status is not None else []):
        if condition.type in CONDITION_TEXT:
            lines.append({"type": condition.type, "label": CONDITION_TEXT[condition.type],
                          "ok": condition.status.value == "True", "reason": condition.reason,
                          "message": condition.message})
    return {"phase": phase, "text": PHASE_TEXT.get(phase, phase), "stale": stale, "backends": lines}


def start_page(hub, request: Request, slug: str, session):
    from .toolpages import gov_pages

    municipality = hub.municipality(slug)
    principal = session.principal
    datasets = hub.engine.datasets(principal)
    own = [d for d in datasets if d.owner == slug]
    shared = [d for d in datasets if d.owner != slug]
    tools = []
    for enabled in municipality.spec.tools:
        tool = hub.catalogue.tool(enabled.name)
        tools.append({"name": enabled.name, "display_name": tool.spec.display_name if tool else enabled.name,
                      "known": tool is not None, "pages": gov_pages(hub, municipality, enabled.name, session)})
    dashboards = hub.extras["dashboards_overview"](hub, session) if "dashboards_overview" in hub.extras else None
    return hub.page(request, "gov/start.html", municipality=municipality, own=own, shared=shared, tools=tools,
                    dashboards=dashboards, platform_status=status_summary(municipality), slug=slug,
                    language_name=i18n.locale_name(request.state.lang))
