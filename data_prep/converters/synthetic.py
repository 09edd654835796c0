"""A generated multimodal set for CPU runs and tests: small PIL images (56-112 px) with questions
whose answers are known by construction, a mix of numerical, math and multiple-choice tasks (one
with two images), each with a short correct reference trace for OPSD. Deterministic in ``--seed``."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw, ImageFont

from data_prep.common import TRACE_FIELD, Sample
from data_prep.converters.base import Converter, Job, register
from data_prep.sources import RowStream

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (30, 160, 60), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
TRAIN_SIZE, TEST_SIZE = 320, 64


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _canvas(rng: random.Random) -> Image.Image:
    side = rng.randrange(56, 113, 8)
    return Image.new("RGB", (side, side), (255, 255, 255))


def _shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _scatter(rng: random.Random, img: Image.Image, items: list[tuple[str, tuple]]) -> None:
    """Draw shapes on a grid of non-overlapping cells."""
    side = img.size[0]
    cells_per_row = 4
    cell = side // cells_per_row
    cells = rng.sample(range(cells_per_row * cells_per_row), len(items))
    draw = ImageDraw.Draw(img)
    for (kind, fill), c in zip(items, cells):
        cx, cy = (c % cells_per_row) * cell, (c // cells_per_row) * cell
        pad = max(2, cell // 6)
        _shape(draw, kind, (cx + pad, cy + pad, cx + cell - pad, cy + cell - pad), fill)


def _text_image(rng: random.Random, text: str) -> Image.Image:
    img = _canvas(rng)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(12, img.size[0] // (len(text) + 1)))
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    side = img.size[0]
    draw.text(((side - (x1 - x0)) // 2 - x0, (side - (y1 - y0)) // 2 - y0), text, fill=(0, 0, 0), font=font)
    return img


def _count(rng):
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    n = rng.randint(1, 5)
    others = [(s, c) for s in SHAPES for c in COLOURS if (s, c) != (shape, colour)]
    items = [(shape, COLOURS[colour])] * n + [(s, COLOURS[c]) for s, c in rng.sample(others, rng.randint(0, 4))]
    img = _canvas(rng)
    _scatter(rng, img, items)
    q = f"<image>\nHow many {colour} {shape}s are in the image?"
    trace = f"I look for {colour} {shape}s and count them one by one: there are {n}."
    return q, str(n), "numerical", [], [img], trace


def _read_number(rng):
    n = rng.randint(0, 999)
    q = "<image>\nWhat number is written in the image?"
    return q, str(n), "numerical", [], [_text_image(rng, str(n))], f"The image shows the digits {n}."


def _sum(rng):
    a, b = rng.randint(1, 50), rng.randint(1, 50)
    q = "<image>\nThe image shows two numbers. What is their sum?"
    trace = f"The numbers are {a} and {b}; {a} + {b} = {a + b}."
    return q, str(a + b), "math", [], [_text_image(rng, f"{a} {b}")], trace


def _tallest(rng):
    names = rng.sample(list(COLOURS), rng.randint(2, 4))
    heights = rng.sample(range(3, 10), len(names))
    img = _canvas(rng)
    side = img.size[0]
    draw = ImageDraw.Draw(img)
    width = side // (2 * len(names) + 1)
    for i, (name, h) in enumerate(zip(names, heights)):
        x = (2 * i + 1) * width
        draw.rectangle((x, side - 2 - h * (side - 4) // 10, x + width, side - 2), fill=COLOURS[name])
    best = max(range(len(names)), key=lambda i: heights[i])
    q = "<image>\nWhich bar is the tallest?"
    options = [f"the {n} bar" for n in names]
    trace = f"Comparing the bar heights, the {names[best]} bar is the tallest, which is option {chr(65 + best)}."
    return q, chr(65 + best), "multiple choice", options, [img], trace


def _more_dots(rng):
    a, b = rng.sample(range(1, 8), 2)
    imgs = []
    for n in (a, b):
        img = _canvas(rng)
        _scatter(rng, img, [("circle", (0, 0, 0))] * n)
        imgs.append(img)
    q = "Image 1: <image>\nImage 2: <image>\nWhich image contains more dots?"
    answer = "A" if a > b else "B"
    trace = f"Image 1 has {a} dots and image 2 has {b} dots, so image {1 if a > b else 2} has more."
    return q, answer, "multiple choice", ["Image 1", "Image 2"], imgs, trace


TASKS = (_count, _read_number, _sum, _tallest, _more_dots)


def generate(split: str, n: int, seed: int):
    """``n`` raw rows of ``split``: the task cycles through ``TASKS``; everything random comes from
    one ``random.Random`` seeded by (seed, split)."""
    rng = random.Random(f"synthetic-{seed}-{split}")
    for i in range(n):
        q, answer, ptype, options, imgs, why = TASKS[i % len(TASKS)](rng)
        yield None, {
            "id": f"synthetic-{split}-{i:05d}", "question": q, "answer": answer, "problem_type": ptype,
            "options": options, "images": [_png(im) for im in imgs],
            TRACE_FIELD: f"<thought>{why}</thought><answer>{answer}</answer>",
        }


@register
class SyntheticConverter(Converter):
    name = "synthetic"
    hub_id = ""
    ability = "visual_reasoning"
    with_trace = True

    def jobs(self, args):
        return [Job("train", "train"), Job("test", "test")]

    def stream(self, source, job, args):
        n = getattr(args, f"synthetic_{job.split}_size", None)
        n = (TRAIN_SIZE if job.split == "train" else TEST_SIZE) if n is None else n
        seed = getattr(args, "seed", 0)
        return RowStream(lambda: generate(job.split, n, seed), n, f"generated (seed {seed})")

    def convert(self, raw, row_id, job):
        return Sample(id=row_id, question=raw["question"], answer=raw["answer"],
                      problem_type=raw["problem_type"], options=raw["options"],
                      images=[(f"images[{i}]", b) for i, b in enumerate(raw["images"])],
                      trace=raw[TRACE_FIELD])
