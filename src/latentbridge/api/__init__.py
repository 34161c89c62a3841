"""The plugin contract: interfaces, segments, step and build contexts, hook specs and ``option``."""
