"""Test support: the harnesses and fixtures the tests share, imported by tests only."""
