"""Synthetic tables: value kinds, domains, colours and `make_table` (the table as a dict).

A table is a plain dict; numbers are `Decimal`s already rounded to the precision shown in the
image, so answers are computed from exactly what a reader sees.
"""
from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal


QUESTION_TYPES = ("lookup", "comparison", "aggregation", "color_count", "multi_step")
SPLITS = ("train", "validation", "test")
COLUMNS = ("table_id", "image", "question", "answer", "final_answer", "question_type")
# Size knobs of `make_table` by name. "default": the synthetic dataset's usual tables; "mini":
# few rows and columns drawn wide enough that a digit spans about one patch (the mini base's).
TABLE_SHAPES = {
    "default": dict(rows=(3, 10), cols=(2, 5), min_width=500, max_width=3000, min_height=None),
    "mini": dict(rows=(3, 5), cols=(2, 3), min_width=640, max_width=900, min_height=200),
}
MINI_TOKENS = (64, 320)  # the pixel budget (in merged 28x28 tokens) the mini base reads at

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


def _draw_style(rng: random.Random, min_width: int, max_width: int,
                min_height: int | None = None) -> dict:
    """Visual choices: target width (skewed towards narrow images), header colour, font, extras.

    min_height: the shortest image height (None: `min_width`, a square-ish page). It draws
    nothing from `rng`: the same seed gives the same style whatever it is.
    """
    width = round(min_width + (max_width - min_width) * rng.random() ** 2)
    header_fill, header_ink = rng.choice(HEADER_COLORS)
    return dict(width=width, min_width=min_width, max_width=max_width, min_height=min_height,
                header_fill=header_fill,
                header_ink=header_ink, family=rng.choice(["serif", "serif", "sans"]),
                group_band=rng.random() < 0.5, numbered_title=rng.random() < 0.3,
                table_number=rng.randint(1, 9))


def make_table(rng: random.Random, index: int, highlights: bool | None = None,
               min_width: int = 500, max_width: int = 3000, rows: tuple[int, int] = (3, 10),
               cols: tuple[int, int] = (2, 5), min_height: int | None = None) -> dict:
    """Random table data and style.

    highlights: force coloured cells and a legend on (True) or off (False); None: random (60%).
    rows, cols: inclusive ranges of the number of body rows and of value columns (the key column
    not counted); min_height: the shortest image height (None: `min_width`). The defaults draw
    exactly the tables (and random numbers) they always did.
    Returns a dict: table_id, domain, title, key_name, singular, plural, columns (name, unit,
    kind, additive), rows (key, group, values as Decimals), groups, highlights ([row, col, colour]),
    legend ([colour, meaning]), totals (bool), note (str or None), style (see `_draw_style`).
    """
    domain_name = rng.choice(sorted(DOMAINS))
    domain = DOMAINS[domain_name]
    n_rows = rng.randint(*rows)
    specs = sorted(rng.sample(range(len(domain["columns"])), rng.randint(*cols)))
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
                 style=_draw_style(rng, min_width, max_width, min_height))
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
