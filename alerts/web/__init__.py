"""The HTTP edge: ``create_app(settings)`` builds the FastAPI application.

Imported lazily: the CLI's commands use this package's query helpers (``alerts.web.silences``,
``alerts.web.api``) and need not pay for building the app's modules (about 1.3 s of imports)."""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from alerts.web.app import create_app

        return create_app
    raise AttributeError(f"module 'alerts.web' has no attribute {name!r}")
