"""The orchestrator (gateway): jobs API, SSE, artifacts, auth, metrics."""

from harmonia.gateway.app import create_app

__all__ = ["create_app"]
