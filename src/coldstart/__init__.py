"""coldstart: cold-start recommendation made easy to train, compare and serve.

The data path, in four hops::

    from coldstart import load_dataset, make_split, evaluate, MODELS
    dataset = load_dataset("ml-100k")
    split = make_split(dataset, "cold_item", seed=1)
    model = MODELS["pop"]().fit(split)
    metrics = evaluate(model, split, phase="test")
"""

from coldstart.errors import DataError
from coldstart.data.dataset import Dataset
from coldstart.data.loaders import LOADERS, load_dataset
from coldstart.data.splits import PROTOCOLS, Split, make_split
from coldstart.eval.evaluate import evaluate
from coldstart.models import MODELS

__all__ = [
    "DataError",
    "Dataset",
    "LOADERS",
    "load_dataset",
    "PROTOCOLS",
    "Split",
    "make_split",
    "evaluate",
    "MODELS",
]
__version__ = "0.1.0"
