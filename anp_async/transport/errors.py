"""The OSError the transports raise or report for an errno, with the text ``strerror``
gives it, as the kernel's socket calls do."""

from __future__ import annotations

import os


def oserror(code: int) -> OSError:
    """``OSError(code, strerror(code))``."""
    return OSError(code, os.strerror(code))
