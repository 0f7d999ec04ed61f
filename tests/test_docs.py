"""The README and the documentation site name only what exists: every ``natheear-tasks``
subcommand and option, every module run with ``python -m`` and its options, every file,
Python name and test they cite; the imports follow the layers that ``docs/design.md``
describes."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from natheear_tasks.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "checkpoints.md", *sorted((ROOT / "docs").rglob("*.md"))]
PACKAGES = ("hear_gram", "natheear_tasks", "training")
LAYERS = ["shared", "formats", "simulation", "tasks", "evaluation", "demo", "cli"]
WRAPPED = {  # our wrappers pass heareval's own options on to its runners
    "natheear_tasks.evaluation.heareval_embed": "heareval.embeddings.runner",
    "natheear_tasks.evaluation.heareval_predict": "heareval.predictions.runner",
}
FOREIGN = {  # other projects' files and fields that the pages cite by name
    "vision_transformer.py",  # timm
    "train.py",  # nanoGPT
    "src/model/GRAMM.py",  # labhamlet/GRAM-M
    "test_score_std",  # heareval's field
}
LAYER_OF = {"baselines": "evaluation", "cli": "cli", "__main__": "cli"}


def code_lines(page: Path) -> Iterator[str]:
    """Command lines of a page: code-block lines (continuations joined) and inline code."""
    text = page.read_text()
    block, fenced = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            block.append(line.strip())
    yield from "\n".join(block).replace("\\\n", " ").splitlines()
    yield from re.findall(r"`([^`\n]+)`", text)


def commands(page: Path, prefix: str) -> Iterator[list[str]]:
    for line in code_lines(page):
        for match in re.finditer(re.escape(prefix) + r"\s+(.*)", line):
            yield match.group(1).split()


def spans(page: Path) -> list[str]:
    return re.findall(r"`([^`\n]+)`", page.read_text())


@cache
def subcommands() -> dict:
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return action.choices


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_natheear_tasks_commands_and_options_exist(page):
    problems = []
    for prefix in ("natheear-tasks", "python -m natheear_tasks"):
        for words in commands(page, prefix):
            if not words or not re.fullmatch(r"[a-z-]+", words[0]):
                continue
            sub = subcommands().get(words[0])
            if sub is None:
                problems.append(f"no subcommand {words[0]!r}")
                continue
            for word in words[1:]:
                option = re.match(r"--[a-z0-9-]+", word)
                if option and option.group(0) not in sub._option_string_actions:
                    problems.append(f"natheear-tasks {words[0]} has no {option.group(0)}")
    assert not problems, sorted(set(problems))


def module_source(name: str) -> str:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, f"no module {name}"
    return Path(spec.origin).read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_scripts_run_with_their_options_exist(page):
    """``python -m M``, ``-m M`` under torchrun, ``python bench/X.py``: the module or script
    exists and each ``--option`` after it is one of its literal option strings."""
    problems = []
    for line in code_lines(page):
        for match in re.finditer(
            r"(?:python|torchrun[^`]*?)\s+(-m\s+[\w.]+|bench/\w+\.py)(.*)", line
        ):
            target, rest = match.group(1), match.group(2).split(" python ")[0]
            if target.startswith("-m"):
                name = target.split()[1]
                if name in ("natheear_tasks", "pytest") or name.startswith("heareval"):
                    continue  # natheear-tasks is checked above; the others are not ours
                if importlib.util.find_spec(name) is None:
                    problems.append(f"no module {name}")
                    continue
                source = module_source(name) + module_source(WRAPPED.get(name, name))
            else:
                if not (ROOT / target).is_file():
                    problems.append(f"no script {target}")
                    continue
                source = (ROOT / target).read_text()
            for option in re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", rest):
                if f'"{option}"' not in source and option not in ("--help",):
                    problems.append(f"{target} has no {option}")
    assert not problems, sorted(set(problems))


def candidates(path: str) -> list[Path]:
    first = path.split("/")[0]
    if first in (*PACKAGES, "bench", "tests", "scripts", "docs", ".ci"):
        return [ROOT / path]
    if "/" in path:
        return [ROOT / package / path for package in PACKAGES]
    return [p for package in PACKAGES for p in (ROOT / package).rglob(path)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_files_exist(page):
    problems = []
    for span in spans(page):
        for path in re.findall(r"(?<![\w/.-])([\w.-]+(?:/[\w.-]+)*\.(?:py|yaml))\b", span):
            first = path.split("/")[0]
            if first in ("mamba_ssm", "heareval", "huggingface") or path in FOREIGN:
                continue
            if path.startswith("training/configs/") or "/" in path or first in PACKAGES:
                if not any(p.is_file() for p in candidates(path)):
                    problems.append(path)
            elif path.endswith(".py") and not any(p.is_file() for p in candidates(path)):
                problems.append(path)
    assert not problems, sorted(set(problems))


def resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            continue
        if found is None:
            continue
        value = importlib.import_module(module)
        for attribute in parts[cut:]:
            if not hasattr(value, attribute):
                return False
            value = getattr(value, attribute)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_python_names_resolve(page):
    names = {
        name
        for span in spans(page)
        for name in re.findall(
            r"(?<![\w/.-])((?:hear_gram|natheear_tasks|training)(?:\.\w+)+)", span
        )
    }
    assert not [n for n in sorted(names) if not resolves(n)]


@cache
def defined_tests() -> set[str]:
    return {
        node.name
        for path in (ROOT / "tests").glob("test_*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_tests_exist(page):
    cited = {name for span in spans(page) for name in re.findall(r"\btest_\w+", span)}
    files = {n for n in cited if (ROOT / "tests" / f"{n}.py").is_file()}
    assert not sorted(cited - files - defined_tests() - FOREIGN)


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, len(lines)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert any("make test" in line for line in lines)


def layer(path: Path) -> str:
    parts = path.relative_to(ROOT / "natheear_tasks").with_suffix("").parts
    if len(parts) == 1:
        return LAYER_OF.get(parts[0], "shared")
    return LAYER_OF.get(parts[0], parts[0])


def imported(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def target_layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "natheear_tasks" or len(parts) == 1:
        return None
    path = ROOT.joinpath(*parts)
    if not path.is_dir() and not path.with_suffix(".py").is_file():
        return None  # a name imported from a module, judged by its module
    return layer(path.with_suffix(".py") if not path.is_dir() else path / "__init__.py")


def test_imports_follow_the_layers():
    problems = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for module in imported(path):
                top = module.split(".")[0]
                if package == "hear_gram" and top in ("natheear_tasks", "training"):
                    problems.append(f"{path.relative_to(ROOT)} imports {module}")
                if package == "natheear_tasks" and top == "training":
                    problems.append(f"{path.relative_to(ROOT)} imports {module}")
                if package != "natheear_tasks" or top != "natheear_tasks":
                    continue
                source, target = layer(path), target_layer(module)
                if target and LAYERS.index(target) > LAYERS.index(source):
                    problems.append(
                        f"{path.relative_to(ROOT)} ({source}) imports {module} ({target})"
                    )
    assert not problems, problems
