"""The frozen models and the path from source to target: prompt encoding, layout, generation, source cache."""
