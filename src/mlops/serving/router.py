"""Which variant answers a request: a pure function of the routing key and the challenger's share."""

from __future__ import annotations

import hashlib
from typing import Literal

Variant = Literal["champion", "challenger"]
VARIANTS: tuple[Variant, ...] = ("champion", "challenger")


def bucket(key: str) -> float:
    """A stable point in [0, 1) for a key: the same on every replica and every restart (unlike hash())."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def route(key: str, challenger_share: float) -> Variant:
    """The challenger for keys whose bucket falls below its share, the champion for the rest.

    Raising the share only moves champion keys to the challenger, never back, so a user
    who saw the challenger keeps seeing it while a canary grows.
    """
    return "challenger" if bucket(key) < challenger_share else "champion"
