"""Settings where the released code decides: each checked against values worked out by hand or
against the released behaviour written out in the test (the released code itself is not imported)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from data_prep.build_parquet import build, parse_args
from test_recipes import composed, run_script


@pytest.fixture(scope="module")
def recipe_data_dir(tmp_path_factory):
    import pandas as pd

    d = tmp_path_factory.mktemp("data")
    (d / "train").mkdir()
    row = {"prompt": [[{"role": "user", "content": "1 + 1?"}]], "extra_info": [{"question": "1 + 1?", "answer": "2"}]}
    for split in ("train", "val"):
        pd.DataFrame(row).to_parquet(d / "train" / f"{split}.parquet")
    return d


@pytest.fixture(scope="module")
def rlsd_cfg(recipe_data_dir):
    return composed(run_script("rlsd", recipe_data_dir))


# ------------------------------------------------------------------ 1. data order
def test_training_reads_the_file_in_order(tmp_path, rlsd_cfg):
    """The converter keeps the source's row order (70 rows: three chunks over two worker processes),
    and verl's sampler under the recipe's data config reads the parquet in that order."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.utils import create_rl_sampler
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from verl_ext.tiny_model import load_tokenizer

    src = tmp_path / "src"
    src.mkdir()
    ids = [f"r{(37 * k) % 70:02d}" for k in range(70)]  # not sorted, so a sort would show
    rows = [{"id": i, "problem": f"Question {i}?", "answer": "1", "images": [], "problem_type": "math"} for i in ids]
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build(parse_args(["train", "--source", str(src), "--out-dir", str(tmp_path / "out"), "--quiet", "--workers", "2"]))
    path = tmp_path / "out/train/train.parquet"
    assert [r["extra_info"]["id"] for r in pq.read_table(path).to_pylist()] == ids

    data = rlsd_cfg["data"]
    assert data["shuffle"] is False
    tok = load_tokenizer()
    config = OmegaConf.create({**data, "filter_overlong_prompts": False, "cache_dir": str(tmp_path / "cache")})
    ds = RLHFDataset(data_files=[str(path)], tokenizer=tok, config=config, processor=None)
    order = list(create_rl_sampler(OmegaConf.create(data), ds))
    assert order == list(range(70))
    assert [ds[i]["extra_info"]["id"] for i in order[:5]] == ids[:5]
    # the former behaviour stays one override away: a seeded shuffle
    shuffled = list(create_rl_sampler(OmegaConf.create({**data, "shuffle": True}), ds))
    assert sorted(shuffled) == list(range(70)) and shuffled != order


# ------------------------------------------------------------------ 7. lambda schedule
# by hand. Ours (the paper): lambda = 0.5 (1 - (s - 1) / 50) at verl's step s, 0 from step 51.
# Released: 0.5 max(1 - s / 60, 0) with s from 1.
PAPER_LAMBDA = {1: 0.5, 2: 0.49, 26: 0.25, 50: 0.01, 51: 0.0, 200: 0.0}
RELEASED_LAMBDA = {1: 0.5 * 59 / 60, 2: 0.5 * 58 / 60, 30: 0.25, 59: 0.5 / 60, 60: 0.0, 200: 0.0}


@pytest.mark.parametrize("form", ["paper", "released"])
def test_lambda_schedule_values(form, recipe_data_dir, rlsd_cfg):
    from test_estimators import call

    if form == "paper":
        alg, expected = rlsd_cfg["algorithm"], PAPER_LAMBDA
    else:  # the released values, reached by override on the recipe
        cfg = composed(run_script("rlsd", recipe_data_dir, "algorithm.rlsd.schedule_step=global",
                                  "algorithm.rlsd.decay_steps=60"))
        alg, expected = cfg["algorithm"], RELEASED_LAMBDA
    for step, lam in expected.items():
        _, metrics = call("rlsd", alg, global_step=step)
        assert metrics["rlsd/lambda"] == pytest.approx(lam, abs=1e-12), (form, step)


def test_lambda_schedule_step_is_checked(recipe_data_dir):
    out = run_script("rlsd", recipe_data_dir, "algorithm.rlsd.schedule_step=released")
    assert out.returncode == 2 and "algorithm.rlsd.schedule_step must be one of ('update', 'global')" in out.stderr


# ------------------------------------------------------------------ 6. validation and checkpoints
def test_validation_and_checkpoint_frequencies(rlsd_cfg, tmp_path):
    t = rlsd_cfg["trainer"]
    assert (t["test_freq"], t["val_before_train"], t["save_freq"], t["max_actor_ckpt_to_keep"]) == (5, True, 10, 5)
    # a teacher copy goes with its actor checkpoint: verl removed the actor of steps 10 and 20
    from verl_ext.trainer.self_distill import prune_teacher_copies

    for step in (10, 20, 30):
        (tmp_path / f"global_step_{step}" / "teacher").mkdir(parents=True)
        (tmp_path / f"global_step_{step}" / "teacher" / "w.pt").write_bytes(b"x")
    (tmp_path / "global_step_30" / "actor").mkdir()
    removed = prune_teacher_copies(str(tmp_path))
    assert removed == [str(tmp_path / f"global_step_{s}" / "teacher") for s in (10, 20)]
    assert (tmp_path / "global_step_30" / "teacher" / "w.pt").exists()
    assert not (tmp_path / "global_step_10" / "teacher").exists()


# ------------------------------------------------------------------ 4. the teacher's hint: the raw answer
def test_teacher_hint_is_the_answer_as_written(tmp_path):
    """The reward grades the cleaned ground truth; the teacher reads the answer as the data writes it
    (the released hint is ``str(answer)``): ``$\\frac{1}{2}$`` keeps its dollars, ``(b)`` stays ``(b)``,
    a number stays as JSON wrote it."""
    from fixtures import data_layouts as L

    from verl_ext.privileged import PrivilegedPromptBuilder, StudentSample, TeacherConfig
    from verl_ext.tiny_model import build_processor

    src = tmp_path / "src"
    L.save_png(src, "i/0.png", 1)
    rows = [
        {"id": "frac", "problem": "<image>Find x.", "answer": "$\\frac{1}{2}$", "images": ["i/0.png"], "problem_type": "math"},
        {"id": "mc", "problem": "<image>Pick one.", "options": ["red", "blue"], "answer": "(b)", "images": ["i/0.png"],
         "problem_type": "multiple choice"},
        {"id": "num", "problem": "2.5 + 1?", "answer": 3.5, "images": [], "problem_type": "numerical"},
    ]
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build(parse_args(["train", "--source", str(src), "--out-dir", str(tmp_path / "out"), "--quiet", "--no-pixel-clamp"]))
    out = pq.read_table(tmp_path / "out/train/train.parquet").to_pylist()
    assert [r["reward_model"]["ground_truth"] for r in out] == ["\\frac{1}{2}", "B", "3.5"]
    assert [r["extra_info"]["raw_answer"] for r in out] == ["$\\frac{1}{2}$", "(b)", "3.5"]

    proc = build_processor()
    samples = [StudentSample(messages=r["prompt"], prompt_ids=[1], response_ids=[2],
                             ground_truth=r["reward_model"]["ground_truth"], extra_info=r["extra_info"]) for r in out]
    for hint in ("answer", "reference"):  # reference: no trace in these rows, so the answer stands in
        cfg = TeacherConfig(hint=hint, reference_field="qwen3vl_235b_thinking_response")
        got = PrivilegedPromptBuilder(proc.tokenizer, proc, cfg).hints(samples).hints
        assert got == ["$\\frac{1}{2}$", "(b)", "3.5"], hint
    # a row converted before raw_answer existed: the ground truth, as before
    old = StudentSample(messages=[], prompt_ids=[1], response_ids=[2], ground_truth="B", extra_info={"answer": "B"})
    assert PrivilegedPromptBuilder(proc.tokenizer, proc, TeacherConfig(hint="answer")).hints([old]).hints == ["B"]


# ------------------------------------------------------------------ 2. the released student template, byte for byte
# A template in the released unified.jinja's form (its constructs, our wording): the question read
# as problem/content, routed by the row's own problem_type, options printed as the row gives them.
RELEASED_FORM_TEMPLATE = """{#- routed by the row's problem_type; options printed raw -#}
{%- if problem is defined -%}
{%- set question = problem -%}
{%- elif content is defined -%}
{%- set question = content -%}
{%- else -%}
{{ 1 / 0 }}
{%- endif -%}
{%- if problem_type is defined -%}
{%- set ptype = problem_type | lower | trim -%}
{%- else -%}
{%- set ptype = "open-ended" -%}
{%- endif -%}
{%- set opts = options if options is defined and options is iterable and options | length > 0 else [] -%}
{%- if ptype == "math" %}
[MATH] Solve it.

{{ question | trim }}
{%- elif ptype == "multiple choice" %}
[CHOICE] Pick a letter.

{{ question | trim }}
{%- if opts | length > 0 %}

Options:
{% for opt in opts -%}
{{ opt }}
{% endfor -%}
{%- endif %}
{%- elif ptype == "open-ended" %}
[OPEN] Answer.

{{ question | trim }}
{%- else %}
[GENERAL] Answer ({{ data_source }}).

{{ question | trim }}
{%- endif %}

"""


def test_released_template_renders_byte_for_byte(tmp_path):
    """Every row form of the training set's paper layout, rendered by the converter with
    ``--prompt-template``, equals the released loader's render: the JSON file read by HF datasets,
    ``jinja2.Template(text.strip()).render(content=problem, problem=problem, **other fields)``."""
    import datasets
    import jinja2
    from fixtures import data_layouts as L

    src = tmp_path / "src"
    L.save_png(src, "i/0.png", 1)
    img = ["i/0.png"]
    rows = [
        {"id": "math", "problem": "<image>Find x.", "answer": "2", "images": img, "problem_type": "math",
         "data_source": "geo"},
        {"id": "lettered", "problem": "<image>Pick one.", "options": ["A. red", "B. blue"], "answer": "B",
         "images": img, "problem_type": "multiple choice", "data_source": "mc"},
        {"id": "plain_options", "problem": "<image>Pick one.", "options": ["red", "blue"], "answer": "red",
         "images": img, "problem_type": "Multiple Choice", "data_source": "mc"},
        {"id": "in_question", "problem": "<image>Pick one.\nA. red\nB. blue", "answer": "A", "images": img,
         "problem_type": "multiple choice", "data_source": "mc"},
        {"id": "hyphen", "problem": "<image>Pick one.", "options": ["A. red", "B. blue"], "answer": "A",
         "images": img, "problem_type": "multiple-choice", "data_source": "mc2"},
        {"id": "no_type", "problem": "  What is 2 + 2?  ", "answer": "4", "images": [], "data_source": "txt"},
        {"id": "ocr", "problem": "<image>Read it.", "answer": "STOP", "images": img, "problem_type": "OCR",
         "data_source": "ocr"},
        {"id": "open", "problem": "<image>Describe.", "answer": "a bar", "images": img, "problem_type": "open-ended",
         "data_source": "o"},
        {"id": "numerical", "problem": "<image>How long?", "answer": "3.5", "images": img, "problem_type": "numerical",
         "data_source": "n"},
    ]
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tpl = tmp_path / "released_form.jinja"
    tpl.write_text(RELEASED_FORM_TEMPLATE)
    build(parse_args(["train", "--source", str(src), "--out-dir", str(tmp_path / "out"), "--quiet",
                      "--no-pixel-clamp", "--prompt-template", str(tpl)]))
    ours = [r["prompt"][0]["content"] for r in pq.read_table(tmp_path / "out/train/train.parquet").to_pylist()]

    ds = datasets.load_dataset("json", data_files=str(src / "train.jsonl"), split="train")
    template = jinja2.Template(RELEASED_FORM_TEMPLATE.strip())
    released = [template.render(content=ex["problem"], problem=ex["problem"],
                                **{k: v for k, v in ex.items() if k != "problem"}) for ex in ds]
    assert len(ours) == len(released) == len(rows)
    for row, a, b in zip(rows, ours, released):
        assert a == b, (row["id"], a, b)
    by_id = dict(zip((r["id"] for r in rows), ours))
    # the four differences the former render had, by hand
    assert by_id["math"] == "\n[MATH] Solve it.\n\n<image>Find x."  # the leading newline is kept
    assert by_id["lettered"] == "\n[CHOICE] Pick a letter.\n\n<image>Pick one.\n\nOptions:\nA. red\nB. blue\n"
    assert by_id["plain_options"].endswith("Options:\nred\nblue\n")  # printed as the row gives them
    assert by_id["hyphen"] == "\n[GENERAL] Answer (mc2).\n\n<image>Pick one."  # not the multiple-choice branch
    assert by_id["no_type"] == "\n[GENERAL] Answer (txt).\n\nWhat is 2 + 2?"  # HF datasets: problem_type None


def test_default_template_reads_normalised_fields(tmp_path):
    """Our own template routes on the normalised type and prints option texts with our letters, so
    the released spellings and lettered options of the training rows do not change it."""
    from fixtures import data_layouts as L

    src = tmp_path / "src"
    L.save_png(src, "i/0.png", 1)
    rows = [{"id": "hyphen", "problem": "<image>Pick one.", "options": ["A. red", "B. blue"], "answer": "A",
             "images": ["i/0.png"], "problem_type": "multiple-choice"}]
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build(parse_args(["train", "--source", str(src), "--out-dir", str(tmp_path / "out"), "--quiet", "--no-pixel-clamp"]))
    content = pq.read_table(tmp_path / "out/train/train.parquet").to_pylist()[0]["prompt"][0]["content"]
    assert content.startswith("You are a helpful assistant capable of answering multiple-choice questions")
    assert content.endswith("Question:\n<image>Pick one.\n\nOptions:\nA. red\nB. blue")


# ------------------------------------------------------------------ 5. rollout extras: vision logit bias, seeds
QWEN_IMAGE_PAD, QWEN_VIDEO_PAD = 151655, 151656  # <|image_pad|>, <|video_pad|> in the Qwen3 vocabulary


class _ServerClient:
    """Stands in for verl's client of the vLLM server (vLLM cannot run here): it records the sampling
    settings of each request and serves it with the project's real CPU rollout server."""

    def __init__(self, server):
        self.server, self.requests = server, []

    async def generate(self, *, request_id, prompt_ids, sampling_params, image_data=None, **_):
        self.requests.append(dict(sampling_params))
        return await self.server.generate(prompt_ids, dict(sampling_params), request_id, image_data=image_data)


@pytest.fixture(scope="module")
def cpu_server(tiny_model_dir):
    from verl.workers.config import HFModelConfig, RolloutConfig

    from verl_ext.cpu.hf_rollout import HFRolloutServer

    config = RolloutConfig(name="hf", prompt_length=256, response_length=4, max_model_len=300, tensor_model_parallel_size=1)
    return HFRolloutServer(config, HFModelConfig(path=str(tiny_model_dir)))


@pytest.mark.parametrize("seed", [None, 1])
def test_vision_logit_bias_and_seed_reach_the_request(seed, rlsd_cfg, recipe_data_dir, cpu_server, tiny_model_dir):
    """The recipe selects the rlsd_single_turn agent loop; run by verl's registry as verl's agent-loop
    worker runs it, every request it sends carries logit bias -100 on the image and video pad ids and,
    with algorithm.rollout.seed=s, the seed s + i for the group's i-th sample."""
    import asyncio

    import hydra
    from omegaconf import OmegaConf
    from PIL import Image
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, _agent_loop_registry
    from verl.utils import hf_processor, hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    cfg = rlsd_cfg if seed is None else composed(run_script("rlsd", recipe_data_dir, f"algorithm.rollout.seed={seed}"))
    rollout = cfg["actor_rollout_ref"]["rollout"]
    assert rollout["agent"]["default_agent_loop"] == "rlsd_single_turn"
    assert cfg["algorithm"]["rollout"] == {"vision_logit_bias": -100, "seed": seed}
    cfg["actor_rollout_ref"]["rollout"].update(prompt_length=256, response_length=4)
    config = OmegaConf.create(cfg)
    tok, proc = hf_tokenizer(str(tiny_model_dir)), hf_processor(str(tiny_model_dir))
    client = _ServerClient(cpu_server)
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (64, 64), "red")},
                                             {"type": "text", "text": "What colour?"}]}]
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}

    async def group():  # verl's worker: one agent loop per sample, session_id = its place in the group
        outs = []
        for i in range(3):
            loop = hydra.utils.instantiate(
                config=_agent_loop_registry[rollout["agent"]["default_agent_loop"]],
                trainer_config=DictConfigWrap(config=config), server_manager=client, tokenizer=tok, processor=proc,
                hf_model_type="qwen3_vl", dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data),
            )
            outs.append(await loop.run(dict(params), raw_prompt=messages, session_id=i))
        return outs

    for out in asyncio.run(group()):
        assert 1 <= len(out.response_ids) <= 4
    assert [r["logit_bias"] for r in client.requests] == [{QWEN_IMAGE_PAD: -100.0, QWEN_VIDEO_PAD: -100.0}] * 3
    assert [r.get("seed") for r in client.requests] == ([None] * 3 if seed is None else [1, 2, 3])
    assert all(r["temperature"] == 1.0 for r in client.requests)  # the worker's own settings are kept


def test_cpu_server_applies_the_logit_bias(cpu_server):
    """The CPU rollout server applies a request's logit_bias before sampling, as vLLM does: +1000 on one
    token makes greedy decoding emit only that token; the log-probs stay those of the model's logits."""
    tok = cpu_server.processor.tokenizer
    target = tok.convert_tokens_to_ids("Hello")
    chat = tok.apply_chat_template([{"role": "user", "content": "Say something."}], add_generation_prompt=True,
                                   tokenize=False)
    prompt = tok.encode(chat, add_special_tokens=False)
    plain = cpu_server._generate(prompt, {"temperature": 0.0, "logprobs": 0}, None)
    biased = cpu_server._generate(prompt, {"temperature": 0.0, "logprobs": 0, "logit_bias": {target: 1000.0}}, None)
    assert plain.token_ids[0] != target
    assert biased.token_ids == [target] * 4
    assert biased.log_probs[0] < plain.log_probs[0]  # the model's own log-prob of the forced token


# ------------------------------------------------------------------ 3. visual tokens per image
def released_tokens(w, h, lo=262144, hi=1048576):
    """The released path by hand: PIL resize by sqrt(range / (w h)) with int() floors, then the
    processor's rounding of each side to the nearest multiple of 32 (one token per 32x32 pixels)."""
    import math

    if w * h > hi:
        f = math.sqrt(hi / (w * h))
        w, h = int(w * f), int(h * f)
    if w * h < lo:
        f = math.sqrt(lo / (w * h))
        w, h = int(w * f), int(h * f)
    return max(1, round(h / 32)) * max(1, round(w / 32))


def test_released_tokens_by_hand():
    # 2400 x 1800: f = sqrt(1048576 / 4320000) = 0.49267, 1182 x 886 -> round(886 / 32) = 28, round(1182 / 32) = 37
    assert released_tokens(2400, 1800) == 28 * 37
    # 120 x 90: f = sqrt(262144 / 10800) = 4.92672, 591 x 443 -> 14 x 18
    assert released_tokens(120, 90) == 14 * 18
    assert released_tokens(640, 480) == 15 * 20  # inside the range: 480 / 32 = 15, 640 / 32 = 20


def _dataset_tokens(ds, processor, item, patch):
    from verl.utils.dataset.rl_dataset import RLHFDataset  # noqa: F401  (ds is one)

    messages = item["raw_prompt"]
    images, _, _ = type(ds)._process_multi_modal_info(messages, patch, ds.config)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    grid = processor(text=[text], images=images, return_tensors="pt")["image_grid_thw"]
    return [int(g.prod()) // 4 for g in grid]


def test_visual_tokens_equal_the_released_resize(tmp_path, rlsd_cfg):
    """Images converted with the default clamp, read by the recipe's dataset class (data.custom_cls)
    under the recipe's data config, get the released path's token count for every size here; verl's
    stock dataset does not."""
    import random

    from omegaconf import OmegaConf
    from PIL import Image
    from verl.utils.dataset.rl_dataset import RLHFDataset, get_dataset_class

    from verl_ext.tiny_model import build_processor

    rng = random.Random(25)
    sizes = [(120, 90), (2400, 1800), (640, 480), (511, 513), (1023, 1025)]
    sizes += [(rng.randint(40, 1800), rng.randint(40, 1800)) for _ in range(35)]
    src = tmp_path / "src"
    (src / "i").mkdir(parents=True)
    rows = []
    for k, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (k * 5 % 255, 90, 30)).save(src / "i" / f"{k}.png", compress_level=1)
        rows.append({"id": f"s{k}", "problem": "<image>Q", "answer": "1", "images": [f"i/{k}.png"], "problem_type": "math"})
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build(parse_args(["train", "--source", str(src), "--out-dir", str(tmp_path / "out"), "--quiet"]))
    path = str(tmp_path / "out/train/train.parquet")

    data = {**rlsd_cfg["data"], "filter_overlong_prompts": False, "cache_dir": str(tmp_path / "cache")}
    config = OmegaConf.create(data)
    assert data["image_patch_size"] == 16
    cls = get_dataset_class(config)
    assert cls.__name__ == "ReleasedResizeDataset" and issubclass(cls, RLHFDataset)
    processor = build_processor(min_pixels=65536, max_pixels=16777216)  # Qwen3-VL-8B's image processor
    ds = cls(data_files=[path], tokenizer=processor.tokenizer, config=config, processor=processor)
    stock = RLHFDataset(data_files=[path], tokenizer=processor.tokenizer, config=config, processor=processor)
    expected = {f"s{k}": released_tokens(w, h) for k, (w, h) in enumerate(sizes)}
    ours = {ds[i]["extra_info"]["id"]: _dataset_tokens(ds, processor, ds[i], 16)[0] for i in range(len(ds))}
    assert ours == expected
    theirs = {stock[i]["extra_info"]["id"]: _dataset_tokens(stock, processor, stock[i], 14)[0] for i in range(len(stock))}
    assert sum(theirs[k] == v for k, v in expected.items()) < len(sizes)  # the stock path differs on some
    # the rollout's call (verl's agent loop awaits this classmethod with the processor's patch size)
    import asyncio

    item = ds[1]
    images, _, _ = asyncio.run(cls.process_multi_modal_info(item["raw_prompt"], 16, config))
    assert (images[0].size[0] // 32) * (images[0].size[1] // 32) == expected[item["extra_info"]["id"]]


# ------------------------------------------------------------------ released forms of the baselines
# method -> settings of its released form (BASELINE_FORM=released), from the released flags
RELEASED_FORMS = {
    "grpo": {},
    "rlsd": {("algorithm", "rlsd", "schedule_step"): "global", ("algorithm", "rlsd", "decay_steps"): 60,
             ("algorithm", "teacher", "sync_every"): 20, ("algorithm", "teacher", "max_hint_length"): 12000,
             ("algorithm", "teacher", "truncation_marker"): ""},
    "opsd": {("actor_rollout_ref", "rollout", "n"): 1, ("algorithm", "teacher", "mode"): "live",
             ("algorithm", "distill", "loss"): "sampled_kl"},
    "sdpo": {("algorithm", "teacher", "template"): "sdpo_inline", ("algorithm", "distill", "loss"): "jsd_topk",
             ("algorithm", "teacher", "mode"): "ema"},  # the paper's SDPO loss and EMA teacher stay
    "grpo_opsd": {("algorithm", "teacher", "hint"): "answer", ("algorithm", "teacher", "mode"): "live"},
}


@pytest.mark.parametrize("method", sorted(RELEASED_FORMS))
def test_released_form_of_each_recipe(method, recipe_data_dir):
    out = run_script(method, recipe_data_dir, BASELINE_FORM="released")
    cfg = composed(out)
    for keys, value in RELEASED_FORMS[method].items():
        node = cfg
        for k in keys:
            node = node[k]
        assert node == value, (method, keys)
    assert cfg["algorithm"]["rollout"]["seed"] == 1
    assert cfg["trainer"]["experiment_name"] == f"qwen3vl8b_{method}_released"
    assert "baseline form (BASELINE_FORM): released" in out.stdout
    lr = {"opsd": 1e-5, "sdpo": 1e-5}.get(method, 1e-6)  # the paper's learning rates stay
    assert cfg["actor_rollout_ref"]["actor"]["optim"]["lr"] == pytest.approx(lr)


def test_unknown_baseline_form_stops(recipe_data_dir):
    out = run_script("opsd", recipe_data_dir, BASELINE_FORM="release")
    assert out.returncode == 2 and "BASELINE_FORM=release: must be paper or released" in out.stderr


def test_sampled_kl_gradient_is_the_released_kl_loss():
    """The released OPSD loss mean_t(log s_t - log t_t) (teacher detached) and verl's PPO loss with our
    sampled_kl advantages have the same gradient at ratio 1 (one update per step)."""
    import torch
    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn

    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    ids = torch.randint(0, 11, (3, 5))
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    logp = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]
    teacher = torch.randn(3, 5) - 2.0
    released = ((logp - teacher) * mask).sum() / mask.sum()
    (g_released,) = torch.autograd.grad(released, logits, retain_graph=True)

    cfg = OmegaConf.create({"distill": {"loss": "sampled_kl"}})
    adv, _ = get_adv_estimator_fn("opsd")(token_level_rewards=torch.zeros(3, 5), response_mask=mask, index=None,
                                          config=cfg, teacher_log_probs=teacher, old_log_probs=logp.detach(),
                                          global_step=1)
    assert torch.equal(adv, -mask)
    actor = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0,
                              "loss_agg_mode": "token-mean", "policy_loss": {"loss_mode": "vanilla"},
                              "global_batch_info": {"dp_size": 1, "batch_num_tokens": int(mask.sum())}})
    loss = get_policy_loss_fn("vanilla")(old_log_prob=logp.detach(), log_prob=logp, advantages=adv,
                                         response_mask=mask, loss_agg_mode="token-mean", config=actor)[0]
    (g_ppo,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(g_ppo, g_released, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="sampled_kl"):
        get_adv_estimator_fn("sdpo")(token_level_rewards=torch.zeros(3, 5), response_mask=mask, config=cfg,
                                     teacher_log_probs=teacher, old_log_probs=logp.detach(), global_step=1)


def test_sdpo_inline_template_renders_the_released_default():
    """The released SDPO prompt without a template file: the question, then each section only when
    present (written out by hand)."""
    from verl_ext.privileged.builder import _render, load_template

    t = load_template("sdpo_inline")
    assert _render(t, " Q? ", "good", "bad", "F") == (
        "Q?\n\nCorrect solution:\ngood\n\nThe following is feedback from your unsuccessful earlier attempt:\nbad\n\n"
        "Correctly solve the original question.")
    assert _render(t, "Q?", "good", "", "F") == "Q?\n\nCorrect solution:\ngood\n\nCorrectly solve the original question."
    assert _render(t, "Q?", "", "", "F") == "Q?\n\nCorrectly solve the original question."
