"""Old name of ``natheear_tasks.simulation.rirbank``, kept so that existing imports keep working."""

from natheear_tasks.simulation.rirbank import *  # noqa: F403
