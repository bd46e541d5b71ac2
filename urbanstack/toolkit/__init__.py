"""The kit for City Tools: tenant context from the operator's Secret and ConfigMap, Kafka in and
out, warehouse queries through the Data Hub engine, e-mail and signed webhooks, health and
metrics. See docs/tools.md."""

from .context import ContextError, ToolContext
from .service import Health, run

__all__ = ["ContextError", "Health", "ToolContext", "run"]
