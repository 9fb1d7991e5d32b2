"""The fault and security suite (issue #8): see conftest.py."""
