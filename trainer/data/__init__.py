"""Datasets: taxonomy, importers, validation, splits and the synthetic scene generator."""
