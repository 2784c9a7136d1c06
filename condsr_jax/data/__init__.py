"""grain input pipelines: image sources, crops and flips, per-process shards, dataset prep."""
