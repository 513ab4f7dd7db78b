"""``python -m anp_async`` runs the ``anp`` command."""

from .cli import main

raise SystemExit(main())
