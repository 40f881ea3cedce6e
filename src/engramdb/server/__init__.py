"""The HTTP faces of Engram."""

from .app import Engine, build_engine, create_app

__all__ = ["Engine", "build_engine", "create_app"]
