"""The README is the front door and the docs speak of the software only."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Words about how the code was made rather than what it does.
HISTORY = re.compile(r"\b(sessions?|lent|issue \d+|not\s+drawn)\b", re.IGNORECASE)


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


def test_every_docs_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {page.name for page in PAGES if page.parent.name == "docs"}
    assert pages and all(f": {name}" in nav for name in pages)
