"""Old name of ``natheear_tasks.simulation.mix``, kept so that existing imports keep working."""

from natheear_tasks.simulation.mix import *  # noqa: F403
