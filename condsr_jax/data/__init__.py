"""grain input pipelines: image sources, crops and augmentation, per-process sharding, dataset preparation."""
