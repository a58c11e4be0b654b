"""HTTP metrics of every request the gateway's ASGI app answers, recorded by the edge
(``guard.py``), so a fast path and a FastAPI route count alike."""

from __future__ import annotations

from prometheus_client import Histogram

from contracts.labels import bounded_label

# The methods a client may send are any token: others are counted as `other`.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a path no route serves

REQUEST_SECONDS = Histogram(
    "billing_http_request_seconds",
    "Requests answered by the gateway, by route template (unmatched: no route), method "
    "and status (none: no answer was sent), from the first byte the app saw to the end "
    "of its answer.",
    ["route", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

# Children by (route, bounded method, status), each from a finite set: labels() costs
# more than the observation itself at the gateway's rates.
_children: dict[tuple[str, str, int], Histogram] = {}


def observe(route: str, method: str, status: int, seconds: float) -> None:
    """``route`` is a template or ``UNMATCHED``; ``status`` 0: no response was started."""
    method = bounded_label(method, METHODS)
    key = (route, method, status)
    child = _children.get(key)
    if child is None:
        child = REQUEST_SECONDS.labels(route, method, str(status) if status else "none")
        _children[key] = child
    child.observe(seconds)
