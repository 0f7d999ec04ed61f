"""File names read from data (split files, metadata, bank indexes) are untrusted: each must
be a plain relative path that stays inside its folder before it becomes a path."""

from __future__ import annotations

from pathlib import Path, PureWindowsPath


def name_problem(name: object, single: bool = False) -> str | None:
    """Why ``name`` is not a plain relative path (one component if ``single``), else None.

    Plain: a non-empty string of ``/``-separated parts, none of them empty, ``.`` or
    ``..``; no backslash, drive or control character.
    """
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name:
        return "is empty"
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "holds a control character"
    if "\\" in name:
        return "holds a backslash (use / between folders)"
    if name.startswith("/") or PureWindowsPath(name).drive:
        return "is an absolute path (names are relative to their folder)"
    parts = name.split("/")
    if single and len(parts) > 1:
        return "must be a single name, without /"
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' part (names must stay inside their folder)"
    return None


def escapes(path: Path, folder: Path) -> bool:
    """Whether ``path`` leads out of ``folder`` once symbolic links are followed."""
    return not path.resolve().is_relative_to(folder.resolve())


def check_name(name: object, what: str, single: bool = False) -> str:
    """``name`` if :func:`name_problem` finds none, else ``ValueError`` naming ``what``."""
    problem = name_problem(name, single)
    if problem:
        raise ValueError(f"{what} {name!r} {problem}")
    return str(name)
