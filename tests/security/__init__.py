"""The fault and security suite: see conftest.py."""
