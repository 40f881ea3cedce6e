"""The compatible vendor APIs: one router per API, each a thin translation of the vendor's
wire format onto the core, with its errors in the vendor's own format.

| API         | paths                                   | error format                         |
|-------------|-----------------------------------------|--------------------------------------|
| MemoryScope | POST /memory                            | {"detail"}                           |
| Memory OS   | /api/v1/memories[/{id}]                 | {"error": {code, message}, "meta"}   |
| MemLayer    | /memories[/...]                         | {"detail"}                           |
| MemContext  | POST /api/memories                      | {"error", "code", "requestId"}       |
| MemoClaw    | /v1/store[/{id}], POST /v1/recall       | {"error": {code, message, details}}  |

See docs/compatibility.md for what is supported and where Engram differs.
"""

from __future__ import annotations

import threading

from fastapi import FastAPI

from ..app import register_error_renderer
from . import memcontext, memlayer, memoclaw, memoryos, memoryscope

__all__ = ["APIS", "include_compat"]

APIS = {
    "MemoryScope": memoryscope,
    "Memory OS": memoryos,
    "MemLayer": memlayer,
    "MemContext": memcontext,
    "MemoClaw": memoclaw,
}

_registered = False
_lock = threading.Lock()


def include_compat(app: FastAPI) -> None:
    """Mount every compat router on `app` (after the native routers) and register each
    API's error renderer (once per process: the renderers are process-wide)."""
    global _registered
    for module in APIS.values():
        app.include_router(module.router)
    with _lock:
        if not _registered:
            for module in APIS.values():
                for prefix in module.PREFIXES:
                    register_error_renderer(prefix, module.render_error)
            _registered = True
