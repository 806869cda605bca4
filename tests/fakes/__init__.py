"""Fake provider drivers for the tests (in-process and multi-process)."""
