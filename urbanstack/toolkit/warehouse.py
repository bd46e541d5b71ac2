"""Warehouse queries of a tool through the Data Hub's engine, under the same tenant rules as the API.

A tool reads as its municipality: what the municipality owns, what others share with it and
what is public (:func:`principal`). :func:`engine` wraps the API's
:class:`~urbanstack.runtime.api.query.QueryEngine`; every call takes the principal, and the
engine refuses a dataset the municipality may not read exactly as the REST API does. On a
ClickHouse server the tenant's own database user (``warehouse-username``/``-password`` in the
credentials Secret) adds the server's grants beneath that.
"""

from __future__ import annotations

from urbanstack.runtime.api.auth import Permission, Principal

from .context import ToolContext

TOOL_PERMISSIONS = frozenset({Permission.read_public, Permission.read_own, Permission.read_shared})


def principal(ctx: ToolContext) -> Principal:
    """The tool's identity for the engine: its municipality, read-only, named by its client id."""
    return Principal(tenant=ctx.municipality, roles=frozenset({"tool"}), subject=ctx.client_id,
                     permissions=TOOL_PERMISSIONS)


def engine(client, catalogue):
    """The Data Hub engine over ``client`` (a warehouse connection) and ``catalogue``."""
    from urbanstack.runtime.api.query import QueryEngine

    return QueryEngine(client, catalogue)
