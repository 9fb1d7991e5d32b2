"""The unit suite imports app.py, whose settings come from the environment: give it the
two settings every deployed function gets from the stack (a test that needs others
builds its own Settings)."""

import os

os.environ.setdefault("USER_POOL_ID", "us-east-1_UnitPool1")
os.environ.setdefault("USER_POOL_CLIENT_ID", "unit-test-client")
