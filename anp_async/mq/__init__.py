"""Scale across cores: a multi-queue TAP with one stack worker process per queue.

:class:`MultiQueueHost` (configured by :class:`HostConfig`) is the API; ``anp up
--queues N`` and ``anp bench scale`` use it. See :mod:`.host` and :mod:`.worker`.
"""

from .host import Death, HostConfig, MultiQueueHost, worker_control_path

__all__ = ["Death", "HostConfig", "MultiQueueHost", "worker_control_path"]
