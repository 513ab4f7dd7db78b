"""Render the conformance results (JSON written by the suite) as a Markdown table.

    python -m tests.conformance.report [results.json] [--update docs/CONFORMANCE.md]

Without ``--update`` the table is printed; with it, the part of the file between the
``<!-- conformance-table:start -->`` and ``<!-- conformance-table:end -->`` markers is
replaced.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

START = "<!-- conformance-table:start -->"
END = "<!-- conformance-table:end -->"
MODULE_ORDER = [
    "test_closed_listen",
    "test_handshake",
    "test_established",
    "test_malformed",
    "test_closing",
    "test_windows_icmp",
]


def case_title(name: str) -> str:
    """``test_rfc9293_3_10_7_1_closed_port_rst_ignored`` -> ``closed port rst ignored``."""
    tokens = name.removeprefix("test_").split("_")
    while tokens and re.fullmatch(r"rfc\d+|\d+", tokens[0]):
        tokens.pop(0)
    return " ".join(tokens)


def split_doc(doc: str) -> tuple[str, str]:
    """(RFC reference, expectation) from a docstring "RFC ...: expectation"."""
    text = " ".join(doc.split())
    ref, _, rest = text.partition(": ")
    return ref.strip(), rest.strip()


def md_text(text: str) -> str:
    """Plain text made safe inside a Markdown table cell."""
    return text.replace("|", "/").replace("<", "&lt;").replace(">", "&gt;")


def cell(res: dict[str, Any] | None) -> str:
    if res is None:
        return "not run"
    if res["outcome"] != "passed":
        return f"**FAIL** ({res.get('error') or res['outcome']})"
    if res.get("deviation"):
        return f"pass, differs: [{res['deviation']}](#{res['deviation']})"
    return "pass"


def observed(res: dict[str, Any] | None) -> str:
    if not res or not res.get("observed"):
        return ""
    text = "; ".join(res["observed"])
    text = re.sub(r"\b(seq|ack)=\d+", r"\1=…", text)
    text = re.sub(r"'Timestamp': \(\d+, \d+\)", "TS", text)
    text = re.sub(r"\(\d{6,}, \d{6,}\)", "(…)", text)
    return md_text(text[:160])


def render(results: dict[str, dict[str, Any]]) -> str:
    def key(item: tuple[str, dict[str, Any]]) -> tuple[int, int, str]:
        name, case = item
        mod = case.get("module", "")
        idx = MODULE_ORDER.index(mod) if mod in MODULE_ORDER else len(MODULE_ORDER)
        return idx, case.get("order", 0), name

    rows = [
        "| # | Case | RFC | Expected behaviour | Stack | Linux |",
        "|---|------|-----|--------------------|-------|-------|",
    ]
    details = ["", "<details><summary>What each target did (from the same run)</summary>", ""]
    details += [
        "| Case | Stack observed | Linux observed |",
        "|------|----------------|----------------|",
    ]
    for i, (name, case) in enumerate(sorted(results.items(), key=key), 1):
        ref, expect = split_doc(case.get("doc", ""))
        t = case["targets"]
        rows.append(
            f"| {i} | `{case_title(name)}` | {ref} | {md_text(expect)} | "
            f"{cell(t.get('stack'))} | {cell(t.get('linux'))} |"
        )
        details.append(
            f"| `{case_title(name)}` | {observed(t.get('stack'))} | {observed(t.get('linux'))} |"
        )
    details += ["", "</details>"]
    n = len(results)
    passed = {
        tgt: sum(
            1 for c in results.values() if c["targets"].get(tgt, {}).get("outcome") == "passed"
        )
        for tgt in ("stack", "linux")
    }
    head = f"{n} cases; stack passes {passed['stack']}/{n}, Linux passes {passed['linux']}/{n}.\n\n"
    return head + "\n".join(rows + details) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default="/tmp/anp-conformance.json")
    ap.add_argument("--update", metavar="MARKDOWN", help="replace the table inside this file")
    args = ap.parse_args(argv)
    with open(args.results) as f:
        table = render(json.load(f))
    if not args.update:
        sys.stdout.write(table)
        return 0
    with open(args.update) as f:
        doc = f.read()
    if START not in doc or END not in doc:
        print(f"{args.update}: markers {START} / {END} not found", file=sys.stderr)
        return 1
    before, _, rest = doc.partition(START)
    _, _, after = rest.partition(END)
    with open(args.update, "w") as f:
        f.write(f"{before}{START}\n{table}{END}{after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
