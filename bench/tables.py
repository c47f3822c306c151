"""Synthetic rows sized like Visual-TableQA for the benchmark (not for training quality).

Images: table grids 1,600-3,100 px wide and 512-3,100 px high (most hit the 2,560-token pixel
cap, ~2,430 visual tokens on average, as the real data does). Questions ~20-40 words; answers
40-150 words of step-by-step text, drawn from the synthetic corpus so the stand-in tokenizer
splits them like real prose (~270 text tokens a sample with the system prompt).
"""
from __future__ import annotations

import random
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont


@lru_cache(maxsize=1)
def _words() -> list[str]:
    from tableqa_helpers.offline import corpus_sentences

    return " ".join(corpus_sentences(400, seed=1)).split()


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # old Pillow
        return ImageFont.load_default()


def render(rng: random.Random, width: int, height: int) -> Image.Image:
    """A white table with a tinted header, grid lines and short cell texts."""
    words = _words()
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    rows, cols = rng.randint(5, 18), rng.randint(3, 8)
    rh, cw = height // rows, width // cols
    font = _font(max(12, min(rh // 2, cw // 8)))
    for i in range(rows):
        if i == 0 or rng.random() < 0.15:
            d.rectangle([0, i * rh, width, (i + 1) * rh],
                        fill=(rng.randint(170, 250), rng.randint(190, 250), 235))
        for j in range(cols):
            d.rectangle([j * cw, i * rh, (j + 1) * cw, (i + 1) * rh], outline="black", width=2)
            text = rng.choice(words).strip(".,:;") if i == 0 or j == 0 else f"{rng.uniform(0, 9999):.1f}"
            d.text((j * cw + 10, i * rh + rh // 4), text, fill="black", font=font)
    return im


def sample(index: int, seed: int = 0) -> dict:
    """Row `index`: table_id, image (PIL RGB), question, answer (deterministic)."""
    rng = random.Random(f"bench/{seed}/{index}")
    words = _words()
    width, height = rng.randint(1600, 3100), rng.randint(512, 3100)
    start = rng.randrange(len(words) - 200)
    q = " ".join(words[start:start + rng.randint(20, 40)]).rstrip(".") + "?"
    start = rng.randrange(len(words) - 200)
    a = " ".join(words[start:start + rng.randint(35, 135)])
    return {"table_id": f"bench_{seed}_{index}", "image": render(rng, width, height),
            "question": q, "answer": a}


def rows(start: int, n: int, seed: int = 0, workers: int = 0) -> list[dict]:
    """Rows start .. start+n-1, rendered in `workers` processes (0: in this one)."""
    idx = list(range(start, start + n))
    if workers <= 1:
        return [sample(i, seed) for i in idx]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as ex:
        return list(ex.map(sample, idx, [seed] * n))
