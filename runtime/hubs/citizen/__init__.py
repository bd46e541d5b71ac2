"""The Citizen Hub: each municipality's public portal — open-data catalogue (pages and
DCAT-AP.de), downloads, published dashboards, city services, accessibility statement,
imprint and privacy. Anonymous, no cookies. ``add_citizen_hub`` puts it into the web app."""

from .app import CitizenHub, NoCookies, TTLCache, add_citizen_hub, create_citizen_hub

__all__ = ["CitizenHub", "NoCookies", "TTLCache", "add_citizen_hub", "create_citizen_hub"]
