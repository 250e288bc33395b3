"""Datasets, content modalities, loaders, split protocols and negative samplers."""
