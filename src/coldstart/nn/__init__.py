"""Reusable layers: contrastive / ranking losses, LightGCN propagation, the content feature encoder."""
