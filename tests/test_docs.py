"""The README is the front door and the docs speak of the software only."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Words about how the code was made rather than what it does. In code, "session" is a
# database's, so only the others are looked for there.
HISTORY = re.compile(r"\b(sessions?|lent|issue \d+|not\s+drawn)\b", re.IGNORECASE)
CODE_HISTORY = re.compile(r"\b(lent|issue \d+|not\s+drawn)\b", re.IGNORECASE)
PACKAGES = ("annlab", "api", "benchmarks", "core", "migrations", "models", "tests", "workers")


def test_the_readme_is_short_and_gives_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "make run" in text and "make test" in text


def test_readme_and_docs_speak_of_the_software_only():
    found = [
        f"{page.name}:{n}: {line.strip()}"
        for page in PAGES
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert found == []


def test_code_comments_speak_of_the_software_only():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != Path(__file__).resolve()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if CODE_HISTORY.search(line)
    ]
    assert found == []


def test_every_docs_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {page.relative_to(ROOT / "docs").as_posix() for page in PAGES[1:]}
    assert pages and all(f": {name}" in nav for name in pages)


def shell_lines(page: Path) -> list[str]:
    """The lines of a page's fenced blocks that are not Python or JSON."""
    lines, language = [], None
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            language = None if language is not None else line.strip("` ") or "sh"
        elif language in ("sh", "bash", "console"):
            lines.append(line)
    return lines


def test_every_annlab_command_in_the_docs_parses():
    """Each `annlab ...` the README, the docs and the recipes give (after `docker compose exec
    api` too) is a command the CLI accepts."""
    from annlab.cli import parser

    commands = [
        command.strip()
        for page in [*PAGES, *sorted((ROOT / "docs").glob("*/*.md"))]
        for line in shell_lines(page)
        for command in re.sub(r"\s+#.*", "", line).split(";")
        if re.match(r"(docker compose exec \w+ )?(\S*/)?annlab ", command.strip())
    ]
    assert len(commands) >= 20
    for command in commands:
        words = re.sub(r"^.*?annlab ", "", command).split(">")[0].split()
        try:
            parser().parse_args(words)
        except SystemExit:
            raise AssertionError(f"`{command}` is not a command annlab accepts") from None
