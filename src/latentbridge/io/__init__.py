"""Files: run folders, checkpoints, translator weights, bridge cards, caches, atomic writes, data files."""
