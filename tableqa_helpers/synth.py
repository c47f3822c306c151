"""Synthetic stand-in for `AI-4-Everyone/Visual-TableQA`: rendered tables, computed answers.

Each sample is one table (title, coloured header, optional row groups, highlighted cells with a
legend, optional totals row) drawn with Pillow like a cropped LaTeX table, and one question whose
answer is computed from the rendered values. Everything is generated offline from a seed.

    make_synthetic_dataset(out_dir, train=100, validation=20, test=20, seed=0)
        -> out_dir/data/{train,validation,test}-00000-of-00001.parquet + out_dir/README.md

A table is a plain dict (see `make_table`); numbers are `Decimal`s already rounded to the
precision shown in the image, so answers are computed from exactly what a reader sees.
"""
from __future__ import annotations

import functools
import io
import random
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .io import atomic_dir

QUESTION_TYPES = ("lookup", "comparison", "aggregation", "color_count", "multi_step")
SPLITS = ("train", "validation", "test")
COLUMNS = ("table_id", "image", "question", "answer", "final_answer", "question_type")

# ----------------------------------------------------------------------------------------------
# Vocabulary: modest word lists, so a small BPE tokenizer trained on `corpus_sentences` covers them
# ----------------------------------------------------------------------------------------------

# value kinds: (decimals shown, prefix, suffix)
KINDS = {
    "count": (0, "", ""),
    "int": (0, "", ""),
    "decimal": (1, "", ""),
    "percent": (1, "", "%"),
    "money_m": (1, "$", "M"),
    "money_b": (1, "$", "B"),
}

# Each domain: key column, row names by group, titles, numeric columns as
# (name, unit shown in the header or "", kind, low, high, additive: whether a sum makes sense).
DOMAINS = {
    "country": dict(
        key="Country", singular="country", plural="countries",
        titles=("Regional Economic Indicators", "Trade and Growth by Country",
                "Country Statistics Overview", "Economic Summary by Region"),
        groups={
            "Europe": ("Norway", "Sweden", "Finland", "Denmark", "France", "Spain", "Italy",
                       "Germany", "Poland", "Austria"),
            "Asia": ("Japan", "India", "China", "Korea", "Vietnam", "Thailand", "Nepal", "Malaysia"),
            "Americas": ("Brazil", "Canada", "Mexico", "Chile", "Peru", "Colombia", "Argentina"),
            "Africa": ("Kenya", "Egypt", "Ghana", "Nigeria", "Morocco", "Senegal", "Ethiopia"),
        },
        columns=(
            ("Population", "thousands", "count", 800, 95000, True),
            ("GDP", "", "money_b", 20, 4000, True),
            ("Growth", "", "percent", 0.1, 9.9, False),
            ("Exports", "", "money_m", 50, 9999, True),
            ("Unemployment", "", "percent", 1, 25, False),
            ("Internet Users", "", "percent", 20, 99, False),
        ),
    ),
    "product": dict(
        key="Product", singular="product", plural="products",
        titles=("Quarterly Product Sales Summary", "Product Performance Report",
                "Annual Sales by Product Line", "Retail Sales Overview"),
        groups={
            "Hardware": ("Laptop", "Tablet", "Monitor", "Router", "Printer", "Keyboard", "Camera",
                         "Speaker"),
            "Software": ("Office Suite", "Antivirus", "Photo Editor", "Cloud Backup",
                         "Video Studio", "Mail Client"),
            "Services": ("Support Plan", "Installation", "Training", "Repair", "Consulting",
                         "Data Recovery"),
        },
        columns=(
            ("Units Sold", "", "count", 100, 90000, True),
            ("Revenue", "", "money_m", 0.5, 250, True),
            ("Margin", "", "percent", 5, 60, False),
            ("Returns", "", "count", 5, 2500, True),
            ("Rating", "out of 5", "decimal", 1, 5, False),
            ("Stores", "", "int", 1, 400, True),
        ),
    ),
    "species": dict(
        key="Species", singular="species", plural="species",
        titles=("Wildlife Survey Results by Species", "Annual Species Monitoring Report",
                "Field Survey of Local Wildlife", "Species Population Census"),
        groups={
            "Mammals": ("Gray Wolf", "Red Fox", "River Otter", "Brown Bear", "Lynx", "Badger",
                        "Red Deer", "Bison"),
            "Birds": ("Gray Heron", "Golden Eagle", "Barn Owl", "White Stork", "Osprey",
                      "Kingfisher", "Puffin"),
            "Fish": ("Atlantic Salmon", "Brown Trout", "Pike", "Carp", "Sturgeon", "Perch"),
        },
        columns=(
            ("Population", "", "count", 50, 80000, True),
            ("Avg. Weight", "kg", "decimal", 0.2, 600, False),
            ("Habitat Area", "sq km", "count", 10, 50000, True),
            ("Decline", "", "percent", 0.1, 45, False),
            ("Lifespan", "years", "int", 2, 60, False),
            ("Sightings", "", "count", 3, 9000, True),
        ),
    ),
    "team": dict(
        key="Team", singular="team", plural="teams",
        titles=("League Standings and Attendance", "Season Results by Team",
                "Club Performance Summary", "Regional League Report"),
        groups={
            "North Division": ("Falcons", "Tigers", "Wolves", "Sharks", "Hawks", "Bears", "Ravens"),
            "South Division": ("Eagles", "Lions", "Panthers", "Dolphins", "Cobras", "Rhinos",
                               "Jaguars"),
            "West Division": ("Comets", "Rockets", "Pirates", "Knights", "Titans", "Giants"),
        },
        columns=(
            ("Wins", "", "int", 1, 60, True),
            ("Losses", "", "int", 1, 60, True),
            ("Goals", "", "int", 10, 200, True),
            ("Points", "", "count", 100, 5000, True),
            ("Attendance", "", "count", 2000, 75000, True),
            ("Revenue", "", "money_m", 1, 300, True),
        ),
    ),
}

NOTES = ("Note: figures are rounded.", "Source: annual survey data.",
         "Note: values are preliminary estimates.", "Source: national statistics office.")

# highlight colour name -> RGB fill (pastel, as with LaTeX \cellcolor)
HIGHLIGHTS = {"green": (198, 239, 206), "red": (255, 199, 206), "yellow": (255, 242, 170),
              "blue": (200, 220, 245)}

# header fill -> text colour (dark fills get white text)
HEADER_COLORS = (
    ((204, 224, 255), (0, 0, 0)), ((214, 234, 210), (0, 0, 0)), ((230, 230, 230), (0, 0, 0)),
    ((250, 235, 200), (0, 0, 0)), ((228, 220, 245), (0, 0, 0)), ((255, 218, 200), (0, 0, 0)),
    ((0, 102, 119), (255, 255, 255)), ((31, 56, 100), (255, 255, 255)),
)

# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def format_value(table: dict, col: int, value: Decimal, extra_decimals: int = 0) -> str:
    """Format `value` as column `col` shows it (thousands separators, %, $ and M/B suffixes)."""
    decimals, prefix, suffix = KINDS[table["columns"][col]["kind"]]
    decimals += extra_decimals
    q = value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return f"{prefix}{q:,.{decimals}f}{suffix}"


def header_text(table: dict, col: int) -> str:
    """Header of numeric column `col` as drawn, e.g. "Population (thousands)"."""
    column = table["columns"][col]
    return f"{column['name']} ({column['unit']})" if column["unit"] else column["name"]


def _sample_values(rng: random.Random, kind: str, low: float, high: float, n: int) -> list[Decimal]:
    """`n` distinct values in [low, high] at the precision the kind shows."""
    decimals = KINDS[kind][0]
    scale = 10 ** decimals
    steps = rng.sample(range(round(low * scale), round(high * scale) + 1), n)
    return [Decimal(s).scaleb(-decimals) for s in steps]


def _group_sizes(rng: random.Random, n: int, capacities: list[int]) -> list[int]:
    """Split `n` rows over groups: at least 2 each, never more than a group's name list."""
    sizes = [2] * len(capacities)
    for _ in range(n - 2 * len(capacities)):
        open_groups = [g for g, cap in enumerate(capacities) if sizes[g] < cap]
        sizes[rng.choice(open_groups)] += 1
    return sizes


def _add_highlights(rng: random.Random, table: dict) -> None:
    """Colour some cells and fill the legend.

    Schemes: target (green/red on one column's top/bottom values), estimate (yellow, random
    cells), record (blue, a column's maximum).
    """
    rows, ncols = table["rows"], len(table["columns"])
    n = len(rows)
    marked: dict[tuple[int, int], str] = {}
    legend: list[list[str]] = []
    scheme = rng.choice(["target", "target", "estimate", "record", "target+estimate"])
    if "target" in scheme:
        col = rng.randrange(ncols)
        k = rng.randint(1, max(1, n // 3))
        order = sorted(range(n), key=lambda r: rows[r]["values"][col])
        for r in order[-k:]:
            marked[(r, col)] = "green"
        for r in order[:k]:
            marked[(r, col)] = "red"
        legend += [["green", "above target"], ["red", "below target"]]
    if "estimate" in scheme:
        cells = [(r, c) for r in range(n) for c in range(ncols) if (r, c) not in marked]
        for cell in rng.sample(cells, min(len(cells), rng.randint(1, 4))):
            marked[cell] = "yellow"
        legend.append(["yellow", "estimated value"])
    if scheme == "record":
        for col in rng.sample(range(ncols), rng.randint(1, min(3, ncols))):
            best = max(range(n), key=lambda r: rows[r]["values"][col])
            marked[(best, col)] = "blue"
        legend.append(["blue", "record high"])
    table["highlights"] = [[r, c, color] for (r, c), color in sorted(marked.items())]
    table["legend"] = legend


def _draw_style(rng: random.Random, min_width: int, max_width: int) -> dict:
    """Visual choices: target width (skewed towards narrow images), header colour, font, extras."""
    width = round(min_width + (max_width - min_width) * rng.random() ** 2)
    header_fill, header_ink = rng.choice(HEADER_COLORS)
    return dict(width=width, min_width=min_width, max_width=max_width, header_fill=header_fill,
                header_ink=header_ink, family=rng.choice(["serif", "serif", "sans"]),
                group_band=rng.random() < 0.5, numbered_title=rng.random() < 0.3,
                table_number=rng.randint(1, 9))


def make_table(rng: random.Random, index: int, highlights: bool | None = None,
               min_width: int = 500, max_width: int = 3000) -> dict:
    """Random table data and style.

    highlights: force coloured cells and a legend on (True) or off (False); None: random (60%).
    Returns a dict: table_id, domain, title, key_name, singular, plural, columns (name, unit,
    kind, additive), rows (key, group, values as Decimals), groups, highlights ([row, col, colour]),
    legend ([colour, meaning]), totals (bool), note (str or None), style (see `_draw_style`).
    """
    domain_name = rng.choice(sorted(DOMAINS))
    domain = DOMAINS[domain_name]
    n_rows = rng.randint(3, 10)
    specs = sorted(rng.sample(range(len(domain["columns"])), rng.randint(2, 5)))
    columns = [dict(name=s[0], unit=s[1], kind=s[2], additive=s[5])
               for s in (domain["columns"][i] for i in specs)]

    group_names = sorted(domain["groups"])
    if n_rows >= 4 and rng.random() < 0.6:
        groups = rng.sample(group_names, rng.randint(2, min(3, n_rows // 2)))
        sizes = _group_sizes(rng, n_rows, [len(domain["groups"][g]) for g in groups])
        keyed = [(g, key) for g, size in zip(groups, sizes)
                 for key in rng.sample(domain["groups"][g], size)]
    else:
        groups = []
        everyone = [key for g in group_names for key in domain["groups"][g]]
        keyed = [(None, key) for key in rng.sample(everyone, n_rows)]

    per_column = [_sample_values(rng, domain["columns"][i][2], domain["columns"][i][3],
                                 domain["columns"][i][4], n_rows) for i in specs]
    rows = [dict(key=key, group=group, values=[vals[r] for vals in per_column])
            for r, (group, key) in enumerate(keyed)]

    year = rng.randint(2015, 2024)
    title = rng.choice(domain["titles"])
    title = rng.choice([f"{title}, {year}", f"{title} ({year})", title])
    table = dict(table_id=f"synth_{index:06d}", domain=domain_name, title=title,
                 key_name=domain["key"], singular=domain["singular"], plural=domain["plural"],
                 columns=columns, rows=rows, groups=groups, highlights=[], legend=[],
                 totals=any(c["additive"] for c in columns) and rng.random() < 0.4,
                 note=rng.choice(NOTES) if rng.random() < 0.3 else None,
                 style=_draw_style(rng, min_width, max_width))
    if highlights or (highlights is None and rng.random() < 0.6):
        _add_highlights(rng, table)
    return table


def cell_texts(table: dict) -> tuple[list[str], list[list[str]], list[str] | None]:
    """(header, data rows, totals row or None) as the strings drawn in the image."""
    header = [table["key_name"]] + [header_text(table, c) for c in range(len(table["columns"]))]
    body = [[row["key"]] + [format_value(table, c, v) for c, v in enumerate(row["values"])]
            for row in table["rows"]]
    totals = None
    if table["totals"]:
        totals = ["Total"] + [
            format_value(table, c, sum(row["values"][c] for row in table["rows"]))
            if col["additive"] else "" for c, col in enumerate(table["columns"])]
    return header, body, totals


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

_FONT_FILES = {
    "serif": {"regular": "DejaVuSerif.ttf", "bold": "DejaVuSerif-Bold.ttf",
              "italic": "DejaVuSerif-Italic.ttf", "bolditalic": "DejaVuSerif-BoldItalic.ttf"},
    "sans": {"regular": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf",
             "italic": "DejaVuSans-Oblique.ttf", "bolditalic": "DejaVuSans-BoldOblique.ttf"},
}


@functools.lru_cache(maxsize=None)
def _font_path(family: str, face: str) -> str | None:
    """Full path of a DejaVu font found by Pillow's font search, or None (then Pillow's default)."""
    for name in (_FONT_FILES[family][face], _FONT_FILES[family]["regular"], "DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, 10).path
        except OSError:
            continue
    return None


@functools.lru_cache(maxsize=512)
def _font(family: str, face: str, size: int) -> ImageFont.FreeTypeFont:
    path = _font_path(family, face)
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


def _layout(table: dict, style: dict, size: int) -> dict:
    """Fonts, column widths and element heights for font size `size` (pixels)."""
    fam = style["family"]
    fonts = dict(body=_font(fam, "regular", size), bold=_font(fam, "bold", size),
                 group=_font(fam, "bolditalic", size),
                 title=_font(fam, "bold", round(size * 1.15)),
                 small=_font(fam, "italic", max(6, round(size * 0.85))))
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
    title = _title(table, style)
    needed = max([sum(widths), fonts["title"].getlength(title), size * 6]
                 + [fonts["group"].getlength(g) + 2 * pad for g in table["groups"]]
                 + [fonts["small"].getlength(table["note"] or "")]
                 + [w for w in legend_items])
    return dict(size=size, fonts=fonts, pad=pad, widths=widths, needed=needed, title=title,
                swatch=swatch, legend_items=legend_items, margin=round(size * 1.5),
                row_h=round(size * 1.65), header_h=round(size * 1.85),
                thick=max(2, round(size / 9)), thin=max(1, round(size / 18)))


def _title(table: dict, style: dict) -> str:
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
        return lay, width, max(height, lo)


def render_table(table: dict, rng: random.Random | None = None) -> Image.Image:
    """Draw `table` like a cropped LaTeX table (white page, rules, coloured header) as RGB.

    rng: when given, draw a fresh style (width, header colour, font) instead of table["style"].
    The width stays within the style's [min_width, max_width]; so does the height (short tables
    get a taller white margin).
    """
    style = table["style"]
    if rng is not None:
        style = _draw_style(rng, style["min_width"], style["max_width"])
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


# ----------------------------------------------------------------------------------------------
# Questions and computed answers
# ----------------------------------------------------------------------------------------------

FINAL_SENTENCES = ("Therefore, the final answer is {a}.", "Therefore, the final answer is **{a}**.",
                   "So the final answer is {a}.", "The final answer is **{a}**.",
                   "Hence, the final answer is {a}.")


def _join(items: list[str]) -> str:
    """Join as English: a / a and b / a, b and c."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _listing(table: dict, col: int, rows: list[int]) -> str:
    """Text like: Norway (1,250), Spain (980) and Japan (3,400), for column `col` of `rows`."""
    return _join([f"{table['rows'][r]['key']} "
                  f"({format_value(table, col, table['rows'][r]['values'][col])})" for r in rows])


def _numeric(table: dict, col: int) -> str:
    """Column name for a question, e.g. "Population" (its unit is in the drawn header)."""
    return table["columns"][col]["name"]


def _q_lookup(table: dict, rng: random.Random) -> tuple[str, list[str], str]:
    r, c = rng.randrange(len(table["rows"])), rng.randrange(len(table["columns"]))
    row, col, head = table["rows"][r], _numeric(table, c), header_text(table, c)
    key, val = row["key"], format_value(table, c, row["values"][c])
    where = f" in the {row['group']} group" if row["group"] else ""
    question = rng.choice([f"What is the {col} of {key}?",
                           f"According to the table, what is the {col} value for {key}?",
                           f"What {col} does the table report for {key}?"])
    steps = rng.choice([
        [f"To answer this, locate the row for **{key}**{where} and follow it to the *{col}* column.",
         f"The cell where this row meets the column shows {val}.",
         "This value is read directly from the table, so no calculation is needed."],
        [f"The first column of the table lists each {table['singular']}, so I start by finding "
         f"{key}{where}.", f"Next, I move across that row to the column headed {head}.",
         f"The value recorded there is **{val}**."],
        [f"Step 1: Find the row labeled {key} in the {table['key_name']} column{where}.",
         f"Step 2: Read the entry under {head} in that row, which is {val}.",
         f"Step 3: Check that the row and the column match the question: {key} and {col}."],
    ])
    return question, steps, val


def _q_comparison(table: dict, rng: random.Random) -> tuple[str, list[str], str]:
    a, b = rng.sample(range(len(table["rows"])), 2)
    c = rng.randrange(len(table["columns"]))
    col = _numeric(table, c)
    ka, kb = table["rows"][a]["key"], table["rows"][b]["key"]
    va, vb = table["rows"][a]["values"][c], table["rows"][b]["values"][c]
    fa, fb = format_value(table, c, va), format_value(table, c, vb)
    relation = "greater than" if va > vb else "less than"
    if rng.random() < 0.5:  # which of the two
        higher = rng.random() < 0.7
        winner = (ka if va > vb else kb) if higher else (ka if va < vb else kb)
        word = "higher" if higher else "lower"
        question = (rng.choice([f"Which {table['singular']} has a higher {col}: {ka} or {kb}?",
                                f"Between {ka} and {kb}, which one has the greater {col}?"])
                    if higher else f"Which has the lower {col}, {ka} or {kb}?")
        steps = rng.choice([
            [f"First, find the {col} values for both {table['plural']}.",
             f"{ka} has a {col} of {fa}, while {kb} has {fb}.",
             f"Comparing the two, {fa} is {relation} {fb}, so **{winner}** has the {word} value."],
            [f"Looking at the *{col}* column, I read the entries for the two {table['plural']} "
             "named in the question.", f"The row for {ka} shows {fa} and the row for {kb} shows {fb}.",
             f"Since {fa} is {relation} {fb}, {winner} is the one with the {word} {col}."],
        ])
        return question, steps, winner
    asks_greater = rng.random() < 0.6
    truth = (va > vb) == asks_greater
    question = (rng.choice([f"Is the {col} of {ka} greater than that of {kb}?",
                            f"Does {ka} have a higher {col} than {kb}?"])
                if asks_greater else f"Is the {col} of {ka} lower than the {col} of {kb}?")
    steps = [f"To check this, compare the {col} values of {ka} and {kb} in the table.",
             f"The table gives {fa} for {ka} and {fb} for {kb}.",
             f"Because {fa} is {relation} {fb}, the statement in the question is "
             f"{'true' if truth else 'false'}."]
    return question, steps, "yes" if truth else "no"


def _mean(values: list[Decimal]) -> Decimal:
    return sum(values) / Decimal(len(values))


def _q_aggregation(table: dict, rng: random.Random) -> tuple[str, list[str], str]:
    rows, ncols = table["rows"], len(table["columns"])
    additive = [c for c in range(ncols) if table["columns"][c]["additive"]]
    ops = ["average", "max", "min"] + (["sum", "sum"] if additive else [])
    if table["groups"]:
        ops += ["group_average"] + (["group_sum"] if additive else [])
    op = rng.choice(ops)
    c = rng.choice(additive if op.endswith("sum") else range(ncols))
    col, plural = _numeric(table, c), table["plural"]
    if op in ("max", "min"):
        best = (max if op == "max" else min)(range(len(rows)), key=lambda r: rows[r]["values"][c])
        word = "highest" if op == "max" else "lowest"
        question = rng.choice([f"Which {table['singular']} has the {word} {col}?",
                               f"Which {table['singular']} records the {word} {col} in the table?"])
        key, val = rows[best]["key"], format_value(table, c, rows[best]["values"][c])
        steps = [f"Scan the *{col}* column and compare all {len(rows)} values.",
                 f"The values are {_listing(table, c, list(range(len(rows))))}.",
                 f"The {word} of these is {val}, which belongs to **{key}**."]
        return question, steps, key
    group = rng.choice(table["groups"]) if op.startswith("group") else None
    members = [r for r in range(len(rows)) if group is None or rows[r]["group"] == group]
    values = [rows[r]["values"][c] for r in members]
    scope = f"the {plural} in the {group} group" if group else f"all {len(members)} {plural}"
    listed = _listing(table, c, members)
    if op.endswith("sum"):
        total = format_value(table, c, sum(values))
        question = (f"What is the total {col} for the {group} group?" if group else
                    rng.choice([f"What is the total {col} of all {plural} in the table?",
                                f"What is the sum of the {col} column?"]))
        steps = [f"To find the total, add the {col} values of {scope}.", f"The values are {listed}."]
        if len(members) <= 6:
            steps.append(" + ".join(format_value(table, c, v) for v in values) + f" = {total}.")
        else:
            steps.append(f"Adding them up gives {total}.")
        if table["totals"] and group is None:
            steps.append("This matches the Total row at the bottom of the table.")
        return question, steps, total
    mean = format_value(table, c, _mean(values), extra_decimals=1)
    question = (f"What is the average {col} of the {plural} in the {group} group?" if group else
                rng.choice([f"What is the average {col} across the {plural} shown?",
                            f"What is the mean {col} in the table?"]))
    steps = [f"To find the average, take the {col} values of {scope}: {listed}.",
             f"Their sum is {format_value(table, c, sum(values))}.",
             f"Dividing by {len(values)} gives {mean}, rounded to one more decimal place than "
             "the table uses."]
    return question, steps, mean


def _q_color_count(table: dict, rng: random.Random) -> tuple[str, list[str], str]:
    if not table["highlights"]:
        raise ValueError("color_count needs a table with highlighted cells")
    color, meaning = rng.choice([item for item in table["legend"]
                                 if any(h[2] == item[0] for h in table["highlights"])])
    cells = [(r, c) for r, c, col in table["highlights"] if col == color]
    question = rng.choice([f"How many cells in the table are highlighted in {color}?",
                           f"According to the legend, how many values are marked as \"{meaning}\"?",
                           f"How many cells are shaded {color}, meaning {meaning}?", None])
    if question is None:  # count within one column
        c = rng.choice(sorted({c for _, c in cells}))
        cells = [cell for cell in cells if cell[1] == c]
        question = f"How many {_numeric(table, c)} values are highlighted in {color}?"
    found = _join([f"{table['rows'][r]['key']} in {_numeric(table, c)} "
                   f"({format_value(table, c, table['rows'][r]['values'][c])})" for r, c in cells])
    steps = [f"The legend below the table explains that {color} means \"{meaning}\".",
             f"Scanning every row for {color} cells, I find {found}.",
             f"Counting them gives {len(cells)} highlighted "
             f"{'cell' if len(cells) == 1 else 'cells'}."]
    return question, steps, str(len(cells))


def _ratio_pair(table: dict, rng: random.Random) -> tuple[int, int] | None:
    """Two columns whose ratios stay readable (0.01 to 10,000), or None."""
    ncols = len(table["columns"])
    pairs = [(a, b) for a in range(ncols) for b in range(ncols) if a != b and all(
        Decimal("0.01") <= row["values"][a] / row["values"][b] <= 10000 for row in table["rows"])]
    return rng.choice(pairs) if pairs else None


def _q_multi_step(table: dict, rng: random.Random) -> tuple[str, list[str], str]:
    rows, ncols = table["rows"], len(table["columns"])
    additive = [c for c in range(ncols) if table["columns"][c]["additive"]]
    ops = ["range", "range", "difference"]
    pair = _ratio_pair(table, rng)
    if pair:
        ops += ["ratio", "ratio"]
    if table["groups"] and additive:
        ops += ["group_total"]
    op = rng.choice(ops)
    if op == "ratio":
        a, b = pair
        ratios = [row["values"][a] / row["values"][b] for row in rows]
        places = 2 if max(ratios) >= 1 else 3
        shown = [r.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP) for r in ratios]
        order = sorted(range(len(rows)), key=lambda r: shown[r], reverse=True)
        if shown[order[0]] != shown[order[1]]:
            ca, cb = _numeric(table, a), _numeric(table, b)
            key = rows[order[0]]["key"]
            parts = [f"{rows[r]['key']}: {format_value(table, a, rows[r]['values'][a])} / "
                     f"{format_value(table, b, rows[r]['values'][b])} = {shown[r]}" for r in order[:3]]
            question = f"Which {table['singular']} has the highest ratio of {ca} to {cb}?"
            steps = [f"For each {table['singular']}, divide the {ca} value by the {cb} value.",
                     f"The three largest results are {_join(parts)}.",
                     f"The highest ratio is {shown[order[0]]}, for **{key}**."]
            return question, steps, key
        op = "range"  # tie after rounding: ask something else
    if op == "group_total":
        c = rng.choice(additive)
        col = _numeric(table, c)
        totals = {g: sum(row["values"][c] for row in rows if row["group"] == g)
                  for g in table["groups"]}
        best = max(totals, key=totals.get)
        if list(totals.values()).count(totals[best]) == 1:
            parts = [f"{g} " + " + ".join(format_value(table, c, row["values"][c])
                                          for row in rows if row["group"] == g)
                     + f" = {format_value(table, c, totals[g])}" for g in table["groups"]]
            question = f"Which group has the largest total {col}?"
            steps = [f"Step 1: add up the {col} values within each group.",
                     f"Step 2: the group totals are {_join(parts)}.",
                     f"Step 3: the largest total is {format_value(table, c, totals[best])}, "
                     f"for the **{best}** group."]
            return question, steps, best
        op = "range"
    c = rng.randrange(ncols)
    col = _numeric(table, c)
    if op == "difference":
        a, b = rng.sample(range(len(rows)), 2)
        va, vb = rows[a]["values"][c], rows[b]["values"][c]
        diff = format_value(table, c, abs(va - vb))
        hi_r, lo_r = (a, b) if va > vb else (b, a)
        question = f"What is the difference in {col} between {rows[a]['key']} and {rows[b]['key']}?"
        steps = [f"Step 1: read the {col} of {rows[a]['key']}, which is {format_value(table, c, va)}.",
                 f"Step 2: read the {col} of {rows[b]['key']}, which is {format_value(table, c, vb)}.",
                 f"Step 3: subtract the smaller value from the larger one: "
                 f"{format_value(table, c, rows[hi_r]['values'][c])} - "
                 f"{format_value(table, c, rows[lo_r]['values'][c])} = {diff}."]
        return question, steps, diff
    hi_r = max(range(len(rows)), key=lambda r: rows[r]["values"][c])
    lo_r = min(range(len(rows)), key=lambda r: rows[r]["values"][c])
    vmax = format_value(table, c, rows[hi_r]["values"][c])
    vmin = format_value(table, c, rows[lo_r]["values"][c])
    diff = format_value(table, c, rows[hi_r]["values"][c] - rows[lo_r]["values"][c])
    question = rng.choice([f"What is the difference between the highest and lowest {col} in the "
                           "table?",
                           f"By how much does the largest {col} exceed the smallest one?"])
    steps = [f"Step 1: find the highest {col}, which is {vmax} for {rows[hi_r]['key']}.",
             f"Step 2: find the lowest {col}, which is {vmin} for {rows[lo_r]['key']}.",
             f"Step 3: subtract the lowest from the highest: {vmax} - {vmin} = {diff}."]
    return question, steps, diff


_QUESTION_MAKERS = {"lookup": _q_lookup, "comparison": _q_comparison,
                    "aggregation": _q_aggregation, "color_count": _q_color_count,
                    "multi_step": _q_multi_step}


def make_question(table: dict, rng: random.Random, question_type: str | None = None) -> dict:
    """One question about `table` with a computed, step-by-step answer.

    question_type: one of QUESTION_TYPES (None: random; color_count only if cells are coloured).
    Returns {"question", "answer", "final_answer", "question_type"}.
    """
    if question_type is None:
        question_type = rng.choice([t for t in QUESTION_TYPES
                                    if t != "color_count" or table["highlights"]])
    question, steps, final = _QUESTION_MAKERS[question_type](table, rng)
    words = sum(len(s.split()) for s in steps)
    if words < 40 or (words < 70 and rng.random() < 0.3):  # short answer: open with the context
        names = _join([_numeric(table, c) for c in range(len(table["columns"]))])
        steps.insert(0, f"The table \"{table['title']}\" lists {len(table['rows'])} "
                        f"{table['plural']} with their {names}.")
    answer = " ".join(steps + [rng.choice(FINAL_SENTENCES).format(a=final)])
    return dict(question=question, answer=answer, final_answer=final, question_type=question_type)


def make_sample(rng: random.Random, index: int, question_type: str | None = None,
                min_width: int = 500, max_width: int = 3000) -> dict:
    """One dataset row: table_id, image (PIL, RGB), question, answer, final_answer, question_type."""
    table = make_table(rng, index, highlights=True if question_type == "color_count" else None,
                       min_width=min_width, max_width=max_width)
    qa = make_question(table, rng, question_type)
    return dict(table_id=table["table_id"], image=render_table(table), **qa)


# ----------------------------------------------------------------------------------------------
# Dataset on disk and tokenizer corpus
# ----------------------------------------------------------------------------------------------

_CARD = """---
pretty_name: Synthetic Visual-TableQA
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: validation
    path: data/validation-*
  - split: test
    path: data/test-*
---
# Synthetic Visual-TableQA (offline stand-in)

Generated by `tableqa_helpers.synth.make_synthetic_dataset(seed={seed})`: rendered tables with
computed questions and step-by-step answers, shaped like `AI-4-Everyone/Visual-TableQA`.

| split | rows |
| --- | --- |
| train | {train} |
| validation | {validation} |
| test | {test} |

Columns: `table_id`, `image` (PNG), `question`, `answer`, `final_answer`, `question_type`
({types}).
"""


def _sample_rng(seed: int, index: int) -> random.Random:
    """Independent generator per sample, so each row depends only on (seed, index)."""
    return random.Random(f"synthetic-tableqa/{seed}/{index}")


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # fast; the tables are mostly white
    return buf.getvalue()


def make_synthetic_dataset(out_dir: str | Path, train: int = 100, validation: int = 20,
                           test: int = 20, seed: int = 0, min_width: int = 500,
                           max_width: int = 3000) -> Path:
    """Write a Visual-TableQA-shaped dataset (parquet per split + README.md) to `out_dir`.

    Deterministic in `seed`; table ids run across splits (synth_000000...), so no table appears
    in two splits; question types cycle so each split is balanced. Built in a temporary sibling
    folder that replaces `out_dir` only when complete. Returns `out_dir`.
    """
    import datasets

    out_dir = Path(out_dir)
    sizes = dict(zip(SPLITS, (train, validation, test)))
    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # to_parquet would print one bar per split
    try:
        with atomic_dir(out_dir) as tmp:
            (tmp / "data").mkdir()
            start = 0
            for split, n in sizes.items():
                ds = _split_dataset(range(start, start + n), seed, min_width, max_width)
                ds.to_parquet(str(tmp / "data" / f"{split}-00000-of-00001.parquet"))
                start += n
            card = _CARD.format(seed=seed, types=", ".join(QUESTION_TYPES), **sizes)
            (tmp / "README.md").write_text(card, encoding="utf-8")
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
    return out_dir


def _split_dataset(indices: range, seed: int, min_width: int, max_width: int):
    """A `datasets.Dataset` of the samples `indices` (images stored as PNG bytes)."""
    import datasets

    features = datasets.Features({
        "table_id": datasets.Value("string"), "image": datasets.Image(),
        "question": datasets.Value("string"), "answer": datasets.Value("string"),
        "final_answer": datasets.Value("string"), "question_type": datasets.Value("string")})
    rows = [make_sample(_sample_rng(seed, i), i, QUESTION_TYPES[i % len(QUESTION_TYPES)],
                        min_width, max_width) for i in indices]
    columns = {name: [row[name] for row in rows] for name in COLUMNS}
    columns["image"] = [{"bytes": _png_bytes(img), "path": None} for img in columns["image"]]
    return datasets.Dataset.from_dict(columns, features=features)


def _vocabulary_sentences() -> list[str]:
    """Sentences that name every word list entry, digit and markup used in the data."""
    out = []
    for d in DOMAINS.values():
        out.append(f"The {d['key']} column lists each {d['singular']}; the table compares "
                   f"{d['plural']}.")
        out += [f"The {g} group contains {_join(list(names))}." for g, names in d["groups"].items()]
        out.append("The columns are " + _join([f"{c[0]} ({c[1]})" if c[1] else c[0]
                                               for c in d["columns"]]) + ".")
        out += [f"{t}, {2015 + i}." for i, t in enumerate(d["titles"])]
    out += list(NOTES)
    out.append("The legend shows " + _join([f"{c} for {m}" for c, m in
                                            (("green", "above target"), ("red", "below target"),
                                             ("yellow", "estimated value"), ("blue", "record high"))])
               + ".")
    out.append("Digits: 0 1 2 3 4 5 6 7 8 9, with values like 1,250, 3.4%, $12.5M, $1,204.7B and "
               "48.25.")
    out.append("Use **bold** for a key and *italic* for a column; yes or no; Total; Table 3: title.")
    return out


def corpus_sentences(n: int, seed: int = 0) -> list[str]:
    """`n` deterministic sentences like the questions and answers (titles, questions, steps).

    The first ~40 sentences name every vocabulary word; the rest come from generated samples.
    """
    out = _vocabulary_sentences()
    i = 0
    while len(out) < n:
        rng = random.Random(f"synthetic-tableqa-corpus/{seed}/{i}")
        question_type = QUESTION_TYPES[i % len(QUESTION_TYPES)]
        table = make_table(rng, i, highlights=True if question_type == "color_count" else None)
        qa = make_question(table, rng, question_type)
        out.append(table["title"])
        out.append(qa["question"])
        out += re.split(r"(?<=[.?!])\s+", qa["answer"])
        i += 1
    return out[:n]
