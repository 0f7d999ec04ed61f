"""Old name of ``natheear_tasks.evaluation.heareval_predict``, kept so that
``python -m natheear_tasks.heareval_predict`` still runs."""

import sys

from natheear_tasks.evaluation.heareval_predict import main

if __name__ == "__main__":
    sys.exit(main())
