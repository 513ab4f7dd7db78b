"""Observability: what ``anp ss``, ``anp top``, ``anp stats --interval``, the metrics
endpoint and ``anp trace`` compute from a stack's figures.

Everything here works on plain data (``Stack.stats()`` dictionaries, trace records), so it
is tested without a stack; the commands in :mod:`anp_async.cli` fetch the data through the
control socket and print it.
"""
