"""The report page: one static HTML file whose images sit beside it (relative paths).

No scripts, no external styles or fonts: the folder opens from disk, from a
zip, or from any static file server, and reads the same offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

import pandas as pd

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #555; margin-top: 0; }
section { margin: 2.2rem 0; }
figure { margin: 0.5rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption, .caption { color: #444; font-size: 0.92rem; }
.note { background: #fff6e0; border-left: 4px solid #e0a800; padding: 0.6rem 0.9rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f5f7; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: 600; }
"""


@dataclass
class Section:
    """A part of the page: a figure and/or tables with a caption, or a note on what is missing."""

    title: str
    caption: str
    image: str | None = None
    tables: list[str] = field(default_factory=list)
    note: str | None = None


def table(frame: pd.DataFrame, title: str) -> str:
    """An HTML table (values escaped) with a title line."""
    body = frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, na_rep="")
    return f'<p class="caption"><strong>{escape(title)}</strong></p>\n{body}'


def _section(section: Section) -> str:
    parts = [f"<section>\n<h2>{escape(section.title)}</h2>"]
    if section.note:
        parts.append(f'<p class="note">{escape(section.note)}</p>')
    if section.image:
        parts.append(
            f'<figure><img src="{escape(section.image)}" alt="{escape(section.title)}">'
            f"<figcaption>{escape(section.caption)}</figcaption></figure>"
        )
    elif not section.note:
        parts.append(f'<p class="caption">{escape(section.caption)}</p>')
    parts.extend(section.tables)
    parts.append("</section>")
    return "\n".join(parts)


def page(title: str, facts: dict[str, str], sections: list[Section]) -> str:
    """The whole document: title, a list of facts about the model, then the sections."""
    facts_html = "\n".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts.items())
    body = "\n".join(_section(s) for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<dl class="meta">
{facts_html}
</dl>
{body}
</body>
</html>
"""
