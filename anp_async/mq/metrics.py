"""OpenMetrics text of a multi-queue host: the summed counters and each worker's.

``anp up --queues N --metrics PORT`` serves ``GET /metrics`` on every worker; the worker
that gets the request asks the host's control socket for ``stats`` (the workers' stats
summed, and each worker's under ``workers``) and answers :func:`render_host` of it:

- every family of a single stack (:func:`anp_async.obs.metrics.render`), with the summed
  values under the labels a single stack has, so dashboards made for one stack read the
  host's totals unchanged;
- the same family once more per worker, labelled ``worker="I"`` (per-connection gauges
  appear once, in the summed part, where every connection is listed);
- ``anp_mq_queues``, ``anp_mq_workers_alive`` and ``anp_mq_deaths_total``.

Summing a family in PromQL therefore needs a selector: ``sum(x{worker!=""})`` is the sum of
the workers, ``x{worker=""}`` the host's total.
"""

from __future__ import annotations

from typing import Any

from ..obs.metrics import render


def _with_label(sample: str, name: str, value: str) -> str:
    brace = sample.find("{")
    if brace < 0:
        head, _, val = sample.rpartition(" ")
        return f'{head}{{{name}="{value}"}} {val}'
    return f'{sample[: brace + 1]}{name}="{value}",{sample[brace + 1 :]}'


def render_host(stats: dict[str, Any], openmetrics: bool = True) -> str:
    """The exposition text of a host's merged ``stats`` (see the module's description)."""
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}

    def take(text: str, worker: str | None) -> None:
        fam = ""
        for line in text.splitlines():
            if line.startswith(("# TYPE ", "# HELP ")):
                fam = line.split(" ", 3)[2]
                if fam not in samples:  # the first text with this family gives its header
                    samples[fam] = []
                    headers[fam] = [line]
                elif not samples[fam] and line not in headers[fam]:
                    headers[fam].append(line)
            elif line and not line.startswith("#") and fam:
                samples[fam].append(line if worker is None else _with_label(line, "worker", worker))

    summed = {k: v for k, v in stats.items() if k not in ("workers", "mq")}
    take(render(summed, openmetrics=False), None)
    for index, w in sorted((stats.get("workers") or {}).items()):
        if not isinstance(w, dict):
            continue
        own = dict(w)
        if isinstance(own.get("tcp"), dict):
            own["tcp"] = {k: v for k, v in own["tcp"].items() if k != "connections"}
        take(render(own, openmetrics=False), str(index))
    lines: list[str] = []
    for fam, rows in samples.items():
        lines += headers[fam] + rows
    mq = stats.get("mq") or {}
    for name, kind, value in (
        ("anp_mq_queues", "gauge", mq.get("queues", 0)),
        ("anp_mq_workers_alive", "gauge", mq.get("alive", 0)),
        ("anp_mq_deaths", "counter", len(mq.get("deaths") or [])),
    ):
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{'_total' if kind == 'counter' else ''} {int(value)}")
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"
