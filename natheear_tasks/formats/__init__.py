"""File formats read and written by every stage: DCASE SELD label lists, the HEAR task
folder format as the GRAM authors publish it, wav encoding. This layer imports nothing
from ``simulation``, ``tasks``, ``evaluation`` or ``demo``."""
