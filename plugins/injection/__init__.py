"""Built-in injection plugins."""
