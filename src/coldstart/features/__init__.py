"""Content features from raw item / user content: presets, extractors and an on-disk cache.

    from coldstart.features import extract, with_features
    modality, report = extract(load_dataset("ml-1m"), "textual")   # Dense [I, 384], cached
"""

from coldstart.features.cache import FeatureCache
from coldstart.features.extract import EXTRACTORS, describe, extract, with_features
from coldstart.features.extras import MissingExtraError
from coldstart.features.presets import PRESETS, Preset, get_preset

__all__ = ["EXTRACTORS", "FeatureCache", "MissingExtraError", "PRESETS", "Preset", "describe", "extract",
           "get_preset", "with_features"]
