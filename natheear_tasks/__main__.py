"""``python -m natheear_tasks``: the natheear-tasks command line."""

import sys

from natheear_tasks.cli import main

sys.exit(main())
