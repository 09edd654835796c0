"""A generated multimodal set a tiny model can learn in minutes on a CPU, for the CPU default and tests.

The task mix (the one place it is defined: ``TASKS``), each answer visible in 64x64 images (4 image
tokens each with the tiny Qwen3-VL's 16-px patches merged 2x2):

- ``colour``: one shape; "What colour is the shape?" -> red | blue | green | yellow (open answer).
- ``more``: two images of black dots (counts 1-8, at least 3 apart); "Does the first image have more dots
  than the second?" -> yes | no (open answer). The answer words appear nowhere in the question (lettered
  options would put both A and B there): a tiny teacher shown the answer in its prompt finds it by content.

"What shape is in the image?" (circle | square | triangle) is not in the mix: at 4 tokens per image the
tiny vision tower (then 1 block of width 32) never told the shapes apart (chance accuracy after 360
warm-start steps), so it only diluted the signal of the two learnable tasks.

Every row carries a short correct reference trace, ``<thought>a red circle</thought><answer> red</answer>``
(about 15 tokens), used by the warm start and by OPSD's teacher. The space after ``<answer>`` keeps ``>`` a token
of its own before every answer: without it the tokenizer merged ``>A`` / ``>B`` (the earlier lettered form of
``more``) while colours follow a lone ``>``, and a few RL steps that favoured ``>`` left every A/B answer
unfinished. Deterministic in ``--seed``.
"""

from __future__ import annotations

import io
import random

import pyarrow as pa
from PIL import Image, ImageDraw

from data_prep.common import TEMPLATES_DIR, TRACE_FIELD, Sample
from data_prep.converters.base import Converter, Job, register
from data_prep.sources import RowStream

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (30, 160, 60), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
SIDE = 64                        # image side in pixels: 2x2 merged tokens of 32 px
GRID = 4                         # dots sit in a 4x4 grid of 16-px cells
MIN_DOT_GAP = 3                  # dot counts of the two images differ by at least this
TRAIN_SIZE, TEST_SIZE = 4000, 90   # the warm start reads the first 600; RL draws from all (mostly unseen images)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _one_shape(rng: random.Random) -> tuple[Image.Image, str, str]:
    """A white square image with one shape of random colour, size (40-56 px: most of the image's four merged
    tokens carry the colour) and position."""
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    size = rng.randrange(40, 57)
    x0, y0 = rng.randrange(2, SIDE - size - 1), rng.randrange(2, SIDE - size - 1)
    img = Image.new("RGB", (SIDE, SIDE), (255, 255, 255))
    _draw_shape(ImageDraw.Draw(img), shape, (x0, y0, x0 + size - 1, y0 + size - 1), COLOURS[colour])
    return img, colour, shape


def _dots(rng: random.Random, n: int) -> Image.Image:
    """``n`` black discs in distinct cells of a 4x4 grid (non-touching: a 3-px margin in each cell)."""
    img = Image.new("RGB", (SIDE, SIDE), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    cell = SIDE // GRID
    for c in rng.sample(range(GRID * GRID), n):
        cx, cy = (c % GRID) * cell, (c // GRID) * cell
        draw.ellipse((cx + 3, cy + 3, cx + cell - 4, cy + cell - 4), fill=(0, 0, 0))
    return img


def _colour(rng):
    img, colour, shape = _one_shape(rng)
    return "<image>\nWhat colour is the shape?", colour, "open", [], [img], f"a {colour} {shape}"


def _more(rng):
    while True:
        a, b = rng.randint(1, 8), rng.randint(1, 8)
        if abs(a - b) >= MIN_DOT_GAP:
            break
    q = "First image: <image>\nSecond image: <image>\nDoes the first image have more dots than the second?"
    answer = "yes" if a > b else "no"
    why = f"{a} dot{'s' * (a != 1)} and {b} dot{'s' * (b != 1)}"
    return q, answer, "open", [], [_dots(rng, a), _dots(rng, b)], why


TASKS = {"colour": _colour, "more": _more}


def generate(split: str, n: int, seed: int):
    """``n`` raw rows of ``split``: the task cycles through ``TASKS``; everything random comes from
    one ``random.Random`` seeded by (seed, split)."""
    rng = random.Random(f"synthetic-{seed}-{split}")
    tasks = list(TASKS.items())
    for i in range(n):
        name, make = tasks[i % len(tasks)]
        q, answer, ptype, options, imgs, why = make(rng)
        yield None, {
            "id": f"synthetic-{split}-{i:05d}", "task": name, "question": q, "answer": answer,
            "problem_type": ptype, "options": options, "images": [_png(im) for im in imgs],
            TRACE_FIELD: f"<thought>{why}</thought><answer> {answer}</answer>",
        }


@register
class SyntheticConverter(Converter):
    name = "synthetic"
    hub_id = ""
    ability = "visual_reasoning"
    with_trace = True
    extra_fields = {"task": pa.string()}  # colour | more: per-task accuracy
    # a one-line instruction: ~30 prompt tokens instead of ~90, and the tiny model learns the format in its warm start
    prompt_template = str(TEMPLATES_DIR / "compact_prompt.jinja")

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
                      trace=raw[TRACE_FIELD], extra={"task": raw["task"]})
