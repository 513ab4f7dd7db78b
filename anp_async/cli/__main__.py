"""``python -m anp_async.cli ...`` is ``anp ...``."""

from .main import main

raise SystemExit(main())
