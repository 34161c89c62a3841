"""Built-in translators plugins."""
