"""How every mlops process logs: one line a record on stderr (the server's access log goes to stdout)."""

from __future__ import annotations

import logging

FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure(level: int) -> None:
    logging.basicConfig(level=level, format=FORMAT)
