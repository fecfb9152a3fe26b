"""How much of a model's pool other routers' breakers may take out of this router's routing.

A breaker opened by another router is second-hand evidence: it may be about that router's own
path to the replica. As Envoy caps outlier ejection with ``max_ejection_percent``, a peer's
breaker is applied here only while the replicas ejected (for any reason) stay within the cap;
this router's own breakers are not capped, since they act on what it saw itself.
"""

from __future__ import annotations

import math


def may_eject_for_peer(serving: int, ejected: int, max_percent: float) -> bool:
    """May one more of ``serving`` replicas (``ejected`` of them already out) be ejected?"""
    if serving <= 0 or not 0.0 <= max_percent <= 100.0:
        return False
    allowed = math.floor(serving * max_percent / 100.0 + 1e-9)
    return ejected + 1 <= allowed
