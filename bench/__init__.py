"""Living benchmarks: each runs as ``python -m bench.NAME`` from the repository root (its
docstring shows how); ``bench.common`` holds what they share."""
