"""Building blocks for plugin authors: attention, pooling, resampling, per-token maps, attention keys."""
