"""report.json: the report model, how commands add to it, and its renderings."""
