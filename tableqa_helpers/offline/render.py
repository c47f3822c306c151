"""Drawing a synthetic table with Pillow like a cropped LaTeX table (`render_table`).
"""
from __future__ import annotations

import functools
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .tables import HIGHLIGHTS, _draw_style, cell_texts


_FONT_FILES = {
    "serif": {"regular": "DejaVuSerif.ttf", "bold": "DejaVuSerif-Bold.ttf",
              "italic": "DejaVuSerif-Italic.ttf", "bolditalic": "DejaVuSerif-BoldItalic.ttf"},
    "sans": {"regular": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf",
             "italic": "DejaVuSans-Oblique.ttf", "bolditalic": "DejaVuSans-BoldOblique.ttf"},
}


@functools.lru_cache(maxsize=None)
def _font_path(family: str, face: str) -> str | None:
    """Full path of a DejaVu font: Pillow's font search (the system's fonts), then the copy that
    matplotlib ships, else None (then Pillow's default, and tables look different)."""
    names = (_FONT_FILES[family][face], _FONT_FILES[family]["regular"], "DejaVuSans.ttf")
    # each face where it is before the next face: the system's italic, else matplotlib's
    for name in (f"{d}{n}" for n in names for d in ("", *(f"{d}/" for d in _matplotlib_fonts()))):
        try:
            return ImageFont.truetype(name, 10).path
        except OSError:
            continue
    return None


def _matplotlib_fonts() -> list[str]:
    try:
        import matplotlib
    except ImportError:
        return []
    return [str(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf")]


@functools.lru_cache(maxsize=512)
def dejavu_font(family: str, face: str, size: int) -> ImageFont.FreeTypeFont:
    """The DejaVu font of `family` ("serif", "sans"...) and `face` ("regular", "bold"...) at
    `size` pixels, as the tables are drawn (Pillow's default font if DejaVu is missing)."""
    path = _font_path(family, face)
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


def _layout(table: dict, style: dict, size: int) -> dict:
    """Fonts, column widths and element heights for font size `size` (pixels)."""
    fam = style["family"]
    fonts = dict(body=dejavu_font(fam, "regular", size), bold=dejavu_font(fam, "bold", size),
                 group=dejavu_font(fam, "bolditalic", size),
                 title=dejavu_font(fam, "bold", round(size * 1.15)),
                 small=dejavu_font(fam, "italic", max(6, round(size * 0.85))))
    header, body, totals = cell_texts(table)
    pad = round(size * 0.6)
    widths = []
    for c in range(len(header)):
        texts = [(fonts["bold"], header[c])] + [(fonts["body"], row[c]) for row in body]
        if totals:
            texts.append((fonts["bold"], totals[c]))
        widths.append(max(font.getlength(t) for font, t in texts) + 2 * pad)
    swatch = round(size * 0.9)
    legend_items = [swatch + size * 0.4 + fonts["small"].getlength(meaning)
                    for _, meaning in table["legend"]]
    title = title_text(table, style)
    needed = max([sum(widths), fonts["title"].getlength(title), size * 6]
                 + [fonts["group"].getlength(g) + 2 * pad for g in table["groups"]]
                 + [fonts["small"].getlength(table["note"] or "")]
                 + [w for w in legend_items])
    return dict(size=size, fonts=fonts, pad=pad, widths=widths, needed=needed, title=title,
                swatch=swatch, legend_items=legend_items, margin=round(size * 1.5),
                row_h=round(size * 1.65), header_h=round(size * 1.85),
                thick=max(2, round(size / 9)), thin=max(1, round(size / 18)))


def title_text(table: dict, style: dict | None = None) -> str:
    """The title as drawn: numbered ("Table 3: ...") if the style says so (default: the table's)."""
    style = table["style"] if style is None else style
    if style["numbered_title"]:
        return f"Table {style['table_number']}: {table['title']}"
    return table["title"]


def _legend_lines(lay: dict, avail: float) -> list[list[int]]:
    """Greedy wrap of legend items (indices) into lines no wider than `avail`."""
    lines: list[list[int]] = []
    width = 0.0
    gap = lay["size"] * 1.6
    for i, w in enumerate(lay["legend_items"]):
        if lines and width + gap + w <= avail:
            lines[-1].append(i)
            width += gap + w
        else:
            lines.append([i])
            width = w
    return lines


def _height(table: dict, lay: dict, avail: float) -> int:
    s = lay["size"]
    h = 2 * lay["margin"] + round(s * 1.9) + 2 * lay["thick"] + lay["header_h"] + lay["thin"]
    h += lay["row_h"] * (len(table["rows"]) + len(table["groups"]) + (1 if table["totals"] else 0))
    h += lay["thin"] * (max(0, len(table["groups"]) - 1) + (1 if table["totals"] else 0))
    if table["legend"]:
        h += round(s * 0.6) + round(s * 1.5) * len(_legend_lines(lay, avail))
    if table["note"]:
        h += round(s * 1.4)
    return h


def _fit(table: dict, style: dict) -> tuple[dict, int, int]:
    """Pick the font size (scaled to the width) and final image size within the style's bounds."""
    lo, hi = style["min_width"], style["max_width"]
    width = style["width"]
    ref = _layout(table, style, 100)
    size = int(min(width / 36, 100 * width / (ref["needed"] + 300)))
    size = max(size, 8)
    while True:
        lay = _layout(table, style, size)
        needed = lay["needed"] + 2 * lay["margin"]
        if needed > width:
            if size > 8:
                size -= 1
                continue
            width = min(hi, int(needed) + 1)  # tiny font already: widen the image instead
        height = _height(table, lay, width - 2 * lay["margin"])
        if height > hi and size > 8:
            size -= 1
            continue
        floor = lo if style.get("min_height") is None else style["min_height"]  # old styles lack it
        return lay, width, max(height, floor)


def render_table(table: dict, rng: random.Random | None = None) -> Image.Image:
    """Draw `table` like a cropped LaTeX table (white page, rules, coloured header) as RGB.

    rng: when given, draw a fresh style (width, header colour, font) instead of table["style"].
    The width stays within the style's [min_width, max_width]; so does the height (short tables
    get a taller white margin).
    """
    style = table["style"]
    if rng is not None:
        style = _draw_style(rng, style["min_width"], style["max_width"], style.get("min_height"))
    lay, width, height = _fit(table, style)
    natural = _height(table, lay, width - 2 * lay["margin"])
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    s, fonts, pad, margin = lay["size"], lay["fonts"], lay["pad"], lay["margin"]
    x0, x1 = margin, width - margin
    extra = (x1 - x0 - sum(lay["widths"])) / len(lay["widths"])  # stretch columns to the width
    edges = [x0]
    for w in lay["widths"]:
        edges.append(edges[-1] + w + extra)
    edges[-1] = x1
    y = margin + (height - natural) // 2
    black = (0, 0, 0)

    def rule(thickness: int) -> None:
        nonlocal y
        draw.rectangle([x0, y, x1 - 1, y + thickness - 1], fill=black)
        y += thickness

    def row(cells: list[str], h: int, font, fills: dict | None = None, ink=black, bg=None) -> None:
        nonlocal y
        if bg is not None:
            draw.rectangle([x0, y, x1 - 1, y + h - 1], fill=bg)
        for c, text in enumerate(cells):
            left, right = edges[c], edges[c + 1]
            if fills and c in fills:
                draw.rectangle([round(left), y, round(right) - 1, y + h - 1], fill=fills[c])
            if c == 0:
                draw.text((left + pad, y + h / 2), text, font=font, fill=ink, anchor="lm")
            else:
                draw.text((right - pad, y + h / 2), text, font=font, fill=ink, anchor="rm")
        y += h

    draw.text((width / 2, y + s * 0.95), lay["title"], font=fonts["title"], fill=black, anchor="mm")
    y += round(s * 1.9)
    header, body, totals = cell_texts(table)
    fills = {}
    for r, c, color in table["highlights"]:
        fills.setdefault(r, {})[c + 1] = HIGHLIGHTS[color]
    rule(lay["thick"])
    row(header, lay["header_h"], fonts["bold"], ink=style["header_ink"], bg=style["header_fill"])
    rule(lay["thin"])
    for r, cells in enumerate(body):
        group = table["rows"][r]["group"]
        if group is not None and (r == 0 or table["rows"][r - 1]["group"] != group):
            if r > 0:
                rule(lay["thin"])
            band = (242, 242, 242) if style["group_band"] else None
            row([group], lay["row_h"], fonts["group"], bg=band)
        row(cells, lay["row_h"], fonts["body"], fills=fills.get(r))
    if totals:
        rule(lay["thin"])
        row(totals, lay["row_h"], fonts["bold"])
    rule(lay["thick"])
    if table["legend"]:
        y += round(s * 0.6)
        sw, line_h = lay["swatch"], round(s * 1.5)
        for line in _legend_lines(lay, x1 - x0):
            x = x0
            for i in line:
                color, meaning = table["legend"][i]
                top = y + (line_h - sw) // 2
                draw.rectangle([x, top, x + sw - 1, top + sw - 1], fill=HIGHLIGHTS[color],
                               outline=black, width=max(1, lay["thin"]))
                draw.text((x + sw + s * 0.4, y + line_h / 2), meaning, font=fonts["small"],
                          fill=black, anchor="lm")
                x += lay["legend_items"][i] + s * 1.6
            y += line_h
    if table["note"]:
        draw.text((x0, y + s * 0.7), table["note"], font=fonts["small"], fill=black, anchor="lm")
    return img
