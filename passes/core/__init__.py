"""The core: artifacts, the pass protocol and pipeline runner, caches, errors and atomic file output."""
