"""Writing HEAR task folders: reading and validating tasks (``taskdir``), Nat-HEAR conversion
(``convert``, with its resume ``journal``), localization tasks (``localize``) and previews
(``preview``)."""
