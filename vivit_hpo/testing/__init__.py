"""Test fixtures shipped with the package (as ``optuna.testing``)."""
