"""Build ``libanp_preload.so`` from the C source beside this file.

``python -m anp_async.preload.build`` builds it (the README's set-up command runs this;
it needs a C compiler: ``scripts/setup.sh`` installs gcc when it is missing). ``anp run``
calls :func:`library_path`, which rebuilds the library when the source is newer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "libanp_preload.c")
LIBRARY_NAME = "libanp_preload.so"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread"]


class BuildError(RuntimeError):
    """The library could not be built (no compiler, or the compiler failed)."""


def _candidates() -> list[str]:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.join(HERE, LIBRARY_NAME), os.path.join(cache, "anp-async", LIBRARY_NAME)]


def _fresh(path: str) -> bool:
    return os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(SOURCE)


def build(out: str | None = None, cc: str | None = None) -> str:
    """Compile the library into ``out`` (default: beside the source); returns its path."""
    out = out or _candidates()[0]
    cc = cc or os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise BuildError("no C compiler found (install gcc: apt-get install gcc)")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".libanp_preload-", suffix=".so", dir=os.path.dirname(out))
    os.close(fd)
    try:
        proc = subprocess.run(
            [cc, *CFLAGS, "-o", tmp, SOURCE, "-ldl"], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise BuildError(f"{cc} failed building {LIBRARY_NAME}:\n{proc.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)  # atomic: a program starting now never sees half a library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def library_path() -> str:
    """The built library, (re)built first if it is missing or older than its source."""
    for path in _candidates():
        if _fresh(path):
            return path
    errors = []
    for path in _candidates():
        try:
            return build(path)
        except (OSError, BuildError) as e:
            errors.append(str(e))
    raise BuildError("; ".join(errors))


def main() -> int:
    try:
        print(build())
    except BuildError as e:
        print(f"anp: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
