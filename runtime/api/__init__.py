"""The Urban Data Hub API: REST and GraphQL over one query engine, Keycloak tokens, tenant isolation."""

from .app import create_app
from .auth import AuthError, Permission, Principal, TokenVerifier, principal_from_claims
from .catalogue import Catalogue, DatasetInfo, FieldInfo
from .query import ApiLimits, QueryEngine, QueryError

__all__ = ["ApiLimits", "AuthError", "Catalogue", "DatasetInfo", "FieldInfo", "Permission", "Principal",
           "QueryEngine", "QueryError", "TokenVerifier", "create_app", "principal_from_claims"]
