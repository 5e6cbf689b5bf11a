"""The HTML report as the tests read it: a small DOM from html.parser, numbers out of
formatted cells, and a real headless Chromium (Debian's ``chromium``; the Makefile
installs it, and the tests that need it skip without it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian `chromium` is not installed (`make` installs it: apt-get install chromium)",
)


# -- a small DOM from html.parser -----------------------------------------------------------

VOID = {"br", "meta", "img", "input", "link", "hr", "col", "wbr", "source", "area", "base"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    parent: Node | None = None
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> list[Node]:
        out: list[Node] = []
        for c in self.children:
            if isinstance(c, Node):
                out.append(c)
                out.extend(c.iter())
        return out

    def find_all(self, tag: str, **attrs: str) -> list[Node]:
        return [
            n
            for n in self.iter()
            if n.tag == tag and all(n.attrs.get(k.rstrip("_")) == v for k, v in attrs.items())
        ]

    def find(self, tag: str, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag} {attrs}>"
        return found[0]

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.cur = self.root
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.children.append(data)


def parse(page: str) -> TreeBuilder:
    tb = TreeBuilder()
    tb.feed(page)
    tb.close()
    return tb


def number(text: str) -> float:
    """``$1,490.09`` / ``930.0`` / ``−$545.31`` / ``60.0%`` → a float."""
    m = re.search(r"([−-])?\$?([\d,]+(?:\.\d+)?)", text)
    assert m, f"no number in {text!r}"
    v = float(m.group(2).replace(",", ""))
    return -v if m.group(1) else v


CONSOLE_RE = re.compile(r":CONSOLE[:(]|\bUncaught\b")
FILE_LOAD_RE = re.compile(r"FileURLLoader::Start: (\S+)")


@dataclass(frozen=True)
class BrowserRun:
    stdout: str
    stderr: str
    url: str

    def problems(self) -> list[str]:
        """Console messages (console.error, uncaught exceptions, CSP refusals) and any file
        the page loaded besides itself (a missing image shows up here: Chromium logs the
        load attempt, not the 404, to stderr)."""
        found = [line for line in self.stderr.splitlines() if CONSOLE_RE.search(line)]
        found += [f"loaded {u}" for u in FILE_LOAD_RE.findall(self.stderr) if u != self.url]
        return found


def chromium(tmp_path: Path, page: Path, *args: str) -> BrowserRun:
    assert CHROMIUM is not None
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    url = page.resolve().as_uri()
    proc = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}",
            "--enable-logging=stderr", "--v=0", "--vmodule=file_url_loader_factory=1",
            *args, url,
        ],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return BrowserRun(proc.stdout, proc.stderr, url)
