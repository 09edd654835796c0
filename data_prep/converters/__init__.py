"""Per-dataset converters; importing this package registers them in ``REGISTRY`` by dataset name."""

from data_prep.converters import arithmetic, mathvision, mathvista, mmmu, synthetic, text_math, train, wemath, zerobench  # noqa: F401
from data_prep.converters.base import REGISTRY, Converter, Job

# command-line dataset names (the training set's rows say data_source "mmfinereason")
DATASETS = {
    "train": REGISTRY["mmfinereason"],
    "mmmu": REGISTRY["mmmu"],
    "mathvista": REGISTRY["mathvista"],
    "mathvision": REGISTRY["mathvision"],
    "zerobench": REGISTRY["zerobench"],
    "wemath": REGISTRY["wemath"],
    "synthetic": REGISTRY["synthetic"],
    # text sets (text-only models; answers in \\boxed{})
    "dapo": REGISTRY["dapo_math"],
    "math500": REGISTRY["math500"],
    "aime24": REGISTRY["aime24"],
    "aime25": REGISTRY["aime25"],
    "arithmetic": REGISTRY["arithmetic"],
}

__all__ = ["DATASETS", "REGISTRY", "Converter", "Job"]
