"""Environment variables set for as long as a local service runs.

The app reads its settings from ``os.environ`` (as on Lambda), and every local function
shares this process, so the local cloud sets variables here and puts the previous
values back when it stops.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


class EnvironPatch:
    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, env: Mapping[str, str]) -> None:
        """Set ``env``; the first value seen for each name is the one ``restore`` brings back."""
        for key, value in env.items():
            self._saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def restore(self) -> None:
        """Put back what was there before (or nothing); safe to call twice."""
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = {}
