"""Per-dataset converters; importing this package registers them in ``REGISTRY`` by dataset name."""

from data_prep.converters import mathvision, mathvista, mmmu, synthetic, train, wemath, zerobench  # noqa: F401
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
}

__all__ = ["DATASETS", "REGISTRY", "Converter", "Job"]
