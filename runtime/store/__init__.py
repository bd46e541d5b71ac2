"""The hubs' metadata store (SQLAlchemy 2 + Alembic) on SQLite or PostgreSQL.

Analytics stay in ClickHouse; here live what the hubs own: dashboards with every
saved version, editors, shares and comments, web sessions and the audit trail.

    store = open_store(settings.metadata_url)
    store.upgrade()                      # or upgrade(owner_url) on PostgreSQL
    board = store.dashboards.create("musterstadt", Actor("sub-1", "Erika"), "Radverkehr", {"panels": []})
"""

from urbanstack.runtime.store.audit import Audit
from urbanstack.runtime.store.dashboards import (Actor, Dashboards, DashboardSummary, InvalidInput, NotFound,
                                                 Overview, VersionConflict)
from urbanstack.runtime.store.db import Store, StoreError, mask_url, open_store, upgrade
from urbanstack.runtime.store.models import (AccessibilityFeedback, AuditEntry, Comment, Dashboard, DashboardEditor, DashboardShare,
                                             DashboardVersion, WebSession)
from urbanstack.runtime.store.sessions import Sessions

__all__ = ["AccessibilityFeedback", "Actor", "Audit", "AuditEntry", "Comment", "Dashboard", "DashboardEditor", "DashboardShare",
           "DashboardSummary", "DashboardVersion", "Dashboards", "InvalidInput", "NotFound", "Overview", "Sessions",
           "Store", "StoreError", "VersionConflict", "WebSession", "mask_url", "open_store", "upgrade"]
