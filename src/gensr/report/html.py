"""Small HTML helpers for the demo page: escaping, links, a Markdown subset, the page shell.

No template engine: the page is a few sections of tables, images and audio players, built from
escaped strings. Every link the page writes is relative, so the folder opens from disk.
"""

from __future__ import annotations

import html
import math
import re
from urllib.parse import quote

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1500px; margin: 0 auto;
       padding: 0 24px 48px; color: #1d1d1f; line-height: 1.45; }
header { border-bottom: 1px solid #ddd; margin-bottom: 8px; }
h1 { font-size: 1.7em; margin: 24px 0 4px; } h2 { margin-top: 40px; border-bottom: 1px solid #eee; }
h3 { margin-top: 28px; } nav a { margin-right: 16px; } .lead { color: #444; max-width: 1100px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f6f6f6; } td.l, th.l { text-align: left; }
table.samples { width: 100%; table-layout: fixed; } table.samples td, table.samples th { text-align: center; }
table.samples td.l, table.samples th.l { text-align: left; width: 15%; } table.samples td.l { font-size: 0.85em; }
img.spec { width: 100%; height: 120px; display: block; image-rendering: auto; background: #000; }
audio { width: 100%; margin-top: 4px; }
.better { color: #0a7d2c; font-weight: 600; } .worse { color: #b3261e; font-weight: 600; } .ns { color: #666; }
.missing { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; }
.note { color: #555; font-size: 0.9em; } code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
figure { margin: 12px 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 16px; }
details { margin: 4px 0 12px; } summary { cursor: pointer; color: #333; }
#player-check { color: #777; font-size: 0.85em; margin-top: 32px; }
"""

# Counts the players and images that loaded or failed, and writes it into #player-check (for the reader,
# and for the headless-browser test that reads it back from the DOM).
CHECK_SCRIPT = """
(function () {
  var audios = Array.prototype.slice.call(document.querySelectorAll('audio'));
  var box = document.getElementById('player-check');
  var loaded = 0, errored = 0;
  function show() {
    var imgs = Array.prototype.slice.call(document.querySelectorAll('img'));
    var imgOk = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
    box.setAttribute('data-audio-total', audios.length);
    box.setAttribute('data-audio-loaded', loaded);
    box.setAttribute('data-audio-errored', errored);
    box.setAttribute('data-img-total', imgs.length);
    box.setAttribute('data-img-loaded', imgOk);
    box.setAttribute('data-done', loaded + errored === audios.length ? '1' : '0');
    box.textContent = 'Audio check: ' + loaded + ' of ' + audios.length + ' players loaded their file' +
      (errored ? ', ' + errored + ' failed' : '') + '; ' + imgOk + ' of ' + imgs.length + ' images shown.';
  }
  audios.forEach(function (a) {
    var seen = false;
    function ok() { if (!seen) { seen = true; loaded++; show(); } }
    function bad() { if (!seen) { seen = true; errored++; show(); } }
    if (a.error) { bad(); } else if (a.readyState >= 1) { ok(); } else {
      a.addEventListener('loadedmetadata', ok); a.addEventListener('error', bad, true);
      var srcs = a.querySelectorAll('source');
      if (srcs.length) { srcs[srcs.length - 1].addEventListener('error', bad); }
    }
  });
  window.addEventListener('load', show);
  show();
})();
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def href(rel_path: str) -> str:
    """A relative URL for a path under the page's folder (each segment percent-encoded)."""
    return "/".join(quote(part) for part in str(rel_path).split("/"))


def link(rel_path: str, text: str) -> str:
    return f'<a href="{esc(href(rel_path))}">{esc(text)}</a>'


def missing(text: str, command: str | None = None) -> str:
    """The line a section shows when its inputs do not exist yet."""
    run = f" Run <code>{esc(command)}</code>." if command else ""
    return f'<p class="missing">{esc(text)}{run}</p>'


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return "nan" if not math.isfinite(float(x)) else (f"{x:d}" if isinstance(x, int) else f"{x:.{digits}f}")
    return str(x)


def table(head: list[str] | None, rows: list[list[str]], left: int = 1, cls: str = "") -> str:
    """A table of already-escaped cells (no header row when head is None); the first `left` columns are left-aligned."""
    def cell(tag: str, i: int, c: str) -> str:
        return f'<{tag} class="l">{c}</{tag}>' if i < left else f"<{tag}>{c}</{tag}>"

    out = [f'<table class="{cls}">' if cls else "<table>"]
    if head is not None:
        out.append("<tr>" + "".join(cell("th", i, c) for i, c in enumerate(head)) + "</tr>")
    out += ["<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>" for r in rows]
    return "\n".join(out + ["</table>"])


_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"), (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>")]


def _inline(text: str) -> str:
    out = esc(text)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def markdown(md: str) -> str:
    """The Markdown the project's reports use: headings, pipe tables, bullet lists, paragraphs, `code`, **bold**
    (image lines are left out)."""
    blocks, lines = [], md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip() or re.fullmatch(r"\s*!\[[^\]]*\]\([^)]*\)\s*", line):
            i += 1  # images are the page's own business: a copied Markdown file's links would not resolve
        elif line.startswith("#"):
            level = min(max(len(line) - len(line.lstrip("#")) + 1, 3), 6)  # the page's own h1/h2 stay above
            blocks.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                    rows.append(cells)
                i += 1
            if rows:
                blocks.append(table([_inline(c) for c in rows[0]], [[_inline(c) for c in r] for r in rows[1:]], left=2))
        elif line.lstrip().startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith(("- ", "* ")):
                items.append(f"<li>{_inline(lines[i].lstrip()[2:])}</li>")
                i += 1
            blocks.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith(("|", "#", "- ", "* ")):
                para.append(lines[i].strip())
                i += 1
            blocks.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(blocks)


def page(title: str, intro: str, nav: list[tuple[str, str]], sections: str) -> str:
    """The whole document: header (title, intro, section links), sections, the player check."""
    links = " ".join(f'<a href="#{esc(anchor)}">{esc(text)}</a>' for anchor, text in nav)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{esc(title)}</title>\n"
            f"<style>{STYLE}</style>\n</head>\n<body>\n<header>\n<h1>{esc(title)}</h1>\n{intro}\n<nav>{links}</nav>\n"
            f"</header>\n{sections}\n<p id=\"player-check\">Audio check: needs JavaScript.</p>\n"
            f"<script>{CHECK_SCRIPT}</script>\n</body>\n</html>\n")
