"""Scoring what a model predicted against labels: per-task metrics, thresholds, calibration,
selective prediction, the results text and label review. Below trust and runs: pure functions
of scores and labels, no model and no run directory."""
