"""The Gov Hub: municipal staff sign in, build and share dashboards, switch on City Tools,
manage who reads which data, invite colleagues, upload spreadsheets. ``create_gov_hub`` builds it."""

from .app import GovHub, create_gov_hub

__all__ = ["GovHub", "create_gov_hub"]
