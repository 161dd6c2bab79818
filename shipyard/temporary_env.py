"""One environment variable set for the length of a `with` block, then put back as it was.

For engine settings read from the environment at a known moment (a client built, a download, a
Tune run): setting them for good would leak into everything else this process starts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def temporary_env(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
