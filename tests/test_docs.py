"""The README and docs/ as a newcomer meets them: the quick start runs as
pasted, and every relative link leads to a file and a heading that exist."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from flask_ticker import Ticker

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

FENCE = re.compile(r"^(```+|~~~+)\s*(\S*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+).*?\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class Block(NamedTuple):
    language: str
    code: str
    line: int  # of the block's first line of code, counted from 1
    section: list[str]  # the headings it is under, outermost first


class Page(NamedTuple):
    headings: list[tuple[int, str]]  # (level, text), in order
    blocks: list[Block]
    prose: list[tuple[int, str]]  # (line number, text) of the lines outside code blocks


def parse(path: Path) -> Page:
    """Headings, fenced code blocks and prose lines of a Markdown file."""
    headings: list[tuple[int, str]] = []
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    section: list[tuple[int, str]] = []
    fence = None  # the open fence's marker, inside a code block
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        opened = FENCE.match(line.lstrip())
        if fence is None and opened:
            fence, language, start, code = opened.group(1), opened.group(2), number + 1, []
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                blocks.append(
                    Block(language, "\n".join(code) + "\n", start, [t for _, t in section])
                )
                fence = None
            else:
                code.append(line)
        elif heading := HEADING.match(line):
            level, text = len(heading.group(1)), heading.group(2)
            headings.append((level, text))
            section = [(lv, t) for lv, t in section if lv < level] + [(level, text)]
        else:
            prose.append((number, line))
    assert fence is None, f"{path.name}: a code block is never closed"
    return Page(headings, blocks, prose)


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its text without Markdown,
    lowercase, punctuation removed, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def anchors(page: Page) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, text in page.headings:
        slug = anchor(text)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")  # as GitHub numbers repeats
    return found


def quick_start_blocks() -> list[Block]:
    return [
        block
        for block in parse(README).blocks
        if block.language == "python" and "Quick start" in block.section
    ]


QUICK_START = quick_start_blocks()


def test_the_readme_has_a_quick_start_with_python_blocks():
    assert QUICK_START, "README.md: no ```python block under a 'Quick start' heading"


@pytest.mark.parametrize(
    "block", QUICK_START, ids=[f"block-{n}-line-{b.line}" for n, b in enumerate(QUICK_START, 1)]
)
def test_the_quick_start_block_runs_as_pasted(block, tmp_path, monkeypatch):
    # As a pasted script sees it: its folder is the app's root and instance
    # folder, and no server is loaded, so the ticker waits to be served.
    monkeypatch.chdir(tmp_path)
    for variable in ("WERKZEUG_RUN_MAIN", "FLASK_RUN_FROM_CLI"):
        monkeypatch.delenv(variable, raising=False)
    for module in ("gunicorn.arbiter", "uwsgi", "waitress"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    # Blank lines in front, so that a traceback gives the README's line numbers.
    code = "\n" * (block.line - 1) + block.code
    namespace = {"__name__": "readme_quickstart"}
    exec(compile(code, "README.md", "exec"), namespace)

    app = namespace.get("app")
    assert app is not None, "the block defines no `app`"
    ticker = app.extensions.get("ticker")
    assert isinstance(ticker, Ticker), "the block's app has no Ticker"
    try:
        assert ticker.jobs, "the block registers no job"
        assert not ticker.started, "the ticker started where the app is not served"
        for job in ticker.jobs:  # the names that flask ticker list shows and run takes
            assert "<locals>" not in job.name
            assert ticker.get(job.name) is job
    finally:
        assert ticker.stop(5)


def test_the_readme_gives_the_test_command_that_ci_runs():
    text = README.read_text(encoding="utf-8")
    assert (
        "    python3 -m venv .venv && . .venv/bin/activate\n"
        "    pip install -e '.[test]' && pytest\n"
    ) in text


def broken_links(path: Path) -> list[str]:
    page = parse(path)
    broken = []
    for number, line in page.prose:
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if SCHEME.match(target):
                continue  # a web address, not a file of ours
            file, _, fragment = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            where = f"{path.relative_to(ROOT)}:{number}: {target}"
            if not linked.exists():
                broken.append(f"{where}: no such file")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(parse(linked)):
                broken.append(f"{where}: no heading #{fragment} in {linked.name}")
    return broken


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(path):
    assert broken_links(path) == []


def test_every_docs_page_is_linked_from_the_readme_and_opens_with_a_title():
    assert DOCS, "no docs/*.md"
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for _, line in parse(README).prose
        for target in LINK.findall(line)
    }
    for path in DOCS:
        assert path.resolve() in linked, f"README.md does not link {path.name}"
        first, second = path.read_text(encoding="utf-8").splitlines()[:2]
        assert first.startswith("# ") and not second.strip(), f"{path.name}: no one-line title"


def test_anchors_are_made_as_github_makes_them():
    assert anchor("The `flask ticker` command") == "the-flask-ticker-command"
    assert anchor("Shutdown, uWSGI, gevent") == "shutdown-uwsgi-gevent"
    assert anchor("`run_in_background(func, /, *args)`") == "run_in_backgroundfunc--args"
    page = Page([(2, "Status"), (3, "Status")], [], [])
    assert anchors(page) == {"status", "status-1"}
