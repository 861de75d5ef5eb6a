#!/usr/bin/env python3
"""Checks the links of a book mdBook built: every relative link (href, src) of every page
leads to a file inside the book, and every #fragment to an id on the page it names.

Links with a scheme (https:, mailto:) are not followed: the check runs offline.

Hand-written rather than mdbook-linkcheck, which follows mdBook 0.4's renderer interface
(the book is built with 0.5), or lychee, whose HTTP stack would be compiled in CI for a check
that reads local files only; this is the standard library's HTML parser and a few lines.

Usage: check-links.py BOOK_DIR
"""

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Page(HTMLParser):
    """The ids a page defines and the links it makes."""

    def __init__(self):
        super().__init__()
        self.ids = set()
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        # <base> sets where the 404 page's links resolve on a web server; it links nowhere.
        if tag == "base":
            return
        for attr in ("href", "src"):
            if attrs.get(attr):
                self.links.append((tag, attrs[attr]))


def parse(path):
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def main():
    book = Path(sys.argv[1]).resolve()
    pages = {path: parse(path) for path in book.rglob("*.html")}
    broken = []
    checked = 0
    for path, page in pages.items():
        for tag, link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                continue
            checked += 1
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            where = f"{path.relative_to(book)}: <{tag}> {link}"
            if book not in target.parents and target != book:
                broken.append(f"{where}: leads outside the book")
            elif target.is_dir():
                if not (target / "index.html").exists():
                    broken.append(f"{where}: a folder with no index.html")
            elif not target.exists():
                broken.append(f"{where}: no such file")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{where}: no id {parts.fragment!r} on that page")
    for problem in sorted(broken):
        print(f"check-links: broken: {problem}")
    print(f"check-links: {checked} links in {len(pages)} pages checked, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
