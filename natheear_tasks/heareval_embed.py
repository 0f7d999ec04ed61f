"""Old name of ``natheear_tasks.evaluation.heareval_embed``, kept so that
``python -m natheear_tasks.heareval_embed`` still runs."""

import sys

from natheear_tasks.evaluation.heareval_embed import main

if __name__ == "__main__":
    sys.exit(main())
