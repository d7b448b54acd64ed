"""A run directory and its typed results: every file a run writes, named and read in one place."""
