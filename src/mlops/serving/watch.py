"""`mlops canary watch`: the closed loop. Every interval, the canary analysis of `mlops canary analyze --apply`,
with the same thresholds and hold rules; servers follow the aliases it moves through their registry poll.

A failed round (Prometheus or the registry briefly unreachable) is logged and retried next round; the loop only
ends when stopped (SIGTERM or SIGINT, between rounds). Each round first finishes an alias move that a killed
process (a previous watch, a deploy) left half done.
"""

from __future__ import annotations

import logging
import signal
import threading

from mlops.config import Params
from mlops.errors import MlopsError
from mlops.serving import canary

log = logging.getLogger(__name__)
VIA = "mlops canary watch"


def watch_round(prometheus_url: str, params: Params, client: object) -> str:
    """One analysis, applied; what happened, as one line."""
    from mlops.registry import registry

    name = params.tracking.registered_model
    for finished in registry.finish_interrupted(client, name):
        log.warning("finished an interrupted alias move: %s", finished.line())
    if registry.CHALLENGER not in registry.aliases(client, name):
        return f"no challenger for {name!r}: nothing to judge"
    analysis = canary.analyze(prometheus_url, params.canary)
    outcome = canary.apply(analysis, client, name, VIA)
    return f"{analysis.decision.value} ({analysis.reason}): {outcome}"


def watch(prometheus_url: str, params: Params, interval: float) -> None:
    from mlops.registry import registry

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    client = registry.connect()
    log.info("watching the canary of %r every %gs", params.tracking.registered_model, interval)
    while not stop.is_set():
        try:
            log.info(watch_round(prometheus_url, params, client))
        except MlopsError as error:
            log.error("this round failed, trying again in %gs: %s", interval, error)
        stop.wait(interval)
    log.info("stopped")
