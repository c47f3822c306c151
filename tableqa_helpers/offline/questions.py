"""Questions about a synthetic table with step-by-step answers computed from its values.
"""
from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal

from .tables import QUESTION_TYPES, format_value, header_text, make_table
from .render import render_table


# Questions and computed answers

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


COUNT_TRIES = 60  # tables drawn at most to find a colour count near the drawn target


def make_sample(rng: random.Random, index: int, question_type: str | None = None,
                min_width: int = 500, max_width: int = 3000, rows: tuple[int, int] = (3, 10),
                cols: tuple[int, int] = (2, 5), min_height: int | None = None) -> dict:
    """One dataset row: table_id, image (PIL, RGB), question, answer, final_answer, question_type.

    rows, cols, min_height: the table's size knobs (see `make_table`).
    With question_type="color_count" the sample first draws its answer, 1 to 4, then tables
    until one's question has that count (the closest after `COUNT_TRIES`): left to the tables,
    most counts are 1 (74% on tables of 3 to 5 rows), and a model that always answers 1 would
    pass for one that sees. Counts within one column ("How many <column> values ...", about a
    tenth of the questions) stay mostly 1 or 2, as one column holds few highlighted cells.
    """
    size = dict(min_width=min_width, max_width=max_width, rows=rows, cols=cols,
                min_height=min_height)
    if question_type != "color_count":
        table = make_table(rng, index, **size)
        qa = make_question(table, rng, question_type)
    else:
        target, best = rng.randint(1, 4), None
        for _ in range(COUNT_TRIES):
            table = make_table(rng, index, highlights=True, **size)
            qa = make_question(table, rng, question_type)
            miss = abs(int(qa["final_answer"]) - target)
            if best is None or miss < best[0]:
                best = (miss, table, qa)
            if miss == 0:
                break
        _, table, qa = best
    return dict(table_id=table["table_id"], image=render_table(table), **qa)
