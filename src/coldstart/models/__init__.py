"""Model registry: name -> class. A new model is one module plus one line here."""

from coldstart.models.base import Recommender
from coldstart.models.popularity import Popularity
from coldstart.models.random_baseline import RandomScores

MODELS: dict[str, type[Recommender]] = {
    Popularity.name: Popularity,
    RandomScores.name: RandomScores,
}

__all__ = ["MODELS", "Recommender"]
