"""Every relative link in the repository's Markdown pages points at a file that exists and, where
it names a section (#anchor), at a heading of that file as GitHub renders its anchor."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted({ROOT / "README.md", ROOT / "BENCHMARKS.md", *ROOT.glob("docs/**/*.md"),
                *ROOT.glob("examples/**/*.md"), *ROOT.glob("benchmarks/**/*.md")})
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose_lines(text: str):
    """The lines outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield line


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, and -1, -2 ...
    after repeats."""
    found, repeats = set(), {}
    for line in prose_lines(path.read_text()):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            n = repeats.get(slug, 0)
            found.add(slug if n == 0 else f"{slug}-{n}")
            repeats[slug] = n + 1
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for line in prose_lines(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                broken.append(f"{target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{target}: no such section")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert not broken_links(page), f"{page.relative_to(ROOT)}: {broken_links(page)}"


def test_the_check_finds_broken_links_and_follows_githubs_anchors(tmp_path):
    (tmp_path / "p.md").write_text(
        "# C consumer (examples/c, OpenVINO's C API)\n## Summary\n## Summary\n"
        "```\n# not a heading [x](gone.md)\n```\n### `--flag` and **bold**: 2026-11-27\n")
    assert anchors(tmp_path / "p.md") == {"c-consumer-examplesc-openvinos-c-api", "summary",
                                          "summary-1", "--flag-and-bold-2026-11-27"}
    (tmp_path / "q.md").write_text(
        "[a](p.md#summary-1) [b](p.md#c-consumer-examplesc-openvinos-c-api) [c](https://x.org/y)"
        " [d](gone.md) [e](p.md#summary-2) [f](#here)\n## Here\n")
    assert broken_links(tmp_path / "q.md") == ["gone.md: no such file",
                                               "p.md#summary-2: no such section"]
