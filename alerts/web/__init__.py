"""The HTTP edge: ``create_app(settings)`` builds the FastAPI application."""

from alerts.web.app import create_app

__all__ = ["create_app"]
