"""The pin state's HTTP route, registered as a built-in plugin: ``GET /metrics/pins`` serves the
pin state metrics in Prometheus' text format from the host's server (``rubix-integration
serve``). Importing this module loads nothing heavy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rubix_integration._host import Host
from rubix_integration.hookspecs import hookimpl

__all__ = ["METRICS_PATH", "register_routes"]

#: Where the server exposes the pin state metrics.
METRICS_PATH = "/metrics/pins"


@hookimpl
def register_routes(manager: Host) -> Sequence[Any]:
    """``GET /metrics/pins``: the metrics, with the pin count of the host's state refreshed."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    def metrics(request: Request) -> Response:
        from rubix_integration.pins._metrics import exposition, set_pin_count

        state = getattr(manager, "pins", None)
        if state is not None:
            set_pin_count(state.name, state.count())
        return Response(exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return [Route(METRICS_PATH, metrics, methods=["GET"])]
