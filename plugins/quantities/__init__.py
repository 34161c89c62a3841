"""Built-in shared step quantities."""
