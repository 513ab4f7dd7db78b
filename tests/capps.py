"""The C test programs of ``tests/apps/c`` compiled with gcc (importable: ``tests.capps``).

:func:`build` compiles every ``*.c`` there into a directory and gives ``{name: path}``
(tests wrap it in a ``c_apps`` fixture). gcc is installed by ``scripts/setup.sh``: a
missing compiler fails the test, never skips it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

C_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "c")
CFLAGS = ["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread"]


def compile_one(name: str, out: str, extra: tuple[str, ...] = ()) -> str:
    """Compile ``tests/apps/c/NAME.c`` to ``out`` (``extra``: more gcc flags, e.g. -static)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("gcc not found: run scripts/setup.sh (it installs gcc)")
    src = os.path.join(C_DIR, f"{name}.c")
    res = subprocess.run(
        [cc, *CFLAGS, *extra, "-o", out, src], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"gcc failed for {src}:\n{res.stderr}")
    return out


def build(out_dir: str) -> dict[str, str]:
    """Compile each ``tests/apps/c/*.c`` to ``out_dir/<name>``; raise on a compile error."""
    names = sorted(f[:-2] for f in os.listdir(C_DIR) if f.endswith(".c"))
    return {n: compile_one(n, os.path.join(out_dir, n)) for n in names}
