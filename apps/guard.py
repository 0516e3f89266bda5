"""Keep os-ken's event loop alive when a handler raises.

os-ken 4's native hub runs an app's events in one thread; an exception escaping a
handler ends that thread silently and the app stops handling anything. Every Loom
handler is wrapped so the error is logged with its traceback and handling goes on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

LOG = logging.getLogger("apps")
F = TypeVar("F", bound=Callable[..., Any])


def guarded(handler: F) -> F:
    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except Exception:
            LOG.exception("handler %s failed; continuing", handler.__qualname__)
            return None

    return wrapper  # type: ignore[return-value]
