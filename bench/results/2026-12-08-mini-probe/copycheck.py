import random, sys, torch
from PIL import ImageOps
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
from tableqa_helpers.offline.mini import mini_table, generate_answer
from tableqa_helpers.offline.render import render_table
from tableqa_helpers.offline.tables import cell_texts, header_text
m = Qwen2_5_VLForConditionalGeneration.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
p = AutoProcessor.from_pretrained(sys.argv[1]); rng = random.Random("copy/1"); names = value = 0; n = 32
for i in range(n):
    t = mini_table(rng, 2 * 10**6 + i); img = ImageOps.grayscale(render_table(t)).convert("RGB")
    _, body, _ = cell_texts(t); r, c = rng.randrange(len(body)), rng.randrange(len(t["columns"]))
    col = header_text(t, c); key = body[r][0]
    got = generate_answer(m, p, img, f"Transcribe the {col} of {key}, with the row and the column.", "cpu", 32)
    names += got.startswith(f"{key}, {col}: "); value += got == f"{key}, {col}: {body[r][c + 1]}"
    if i < 3: print(repr(got), "|", key, col, body[r][c + 1])
print(f"names copied {names}/{n}, whole answer right {value}/{n}")
