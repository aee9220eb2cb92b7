"""``python -m aiport``: the same command line as the ``aiport`` script."""

from aiport.core.cli import main

raise SystemExit(main())
