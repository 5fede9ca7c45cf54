"""The ASGI application: ThingPark report endpoint, read API, health and metrics."""

from tpas.interfaces.http.app import create_app

__all__ = ["create_app"]
