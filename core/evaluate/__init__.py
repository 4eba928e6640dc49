"""Diagnostics of trained models on a store."""
