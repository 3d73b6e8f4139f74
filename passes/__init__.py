"""The library: core (artifacts, pipeline), backends (runtimes), the passes, checks, report and workflows."""
