"""The stack outputs that `cdk deploy --outputs-file` writes: {"<stack>": {"<name>": "<value>"}}."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS_FILE = ROOT / ".local" / "stack-outputs.json"
STACK_NAME = "LlmStream"
CLIENT_URL = "ClientUrl"


class OutputsError(RuntimeError):
    """The outputs file is missing or not what ``cdk deploy`` writes (the message says why)."""


def load_outputs(path: Path = OUTPUTS_FILE, stack: str = STACK_NAME) -> dict[str, str]:
    """The outputs of ``stack`` (or of the only stack in the file)."""
    if not path.is_file():
        raise OutputsError(
            f"{shown(path)} does not exist: deploy the stack first (make deploy), which writes it."
        )
    try:
        stacks = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OutputsError(
            f"{shown(path)} is not readable JSON ({e}); run make deploy again."
        ) from e
    if not isinstance(stacks, dict) or not stacks:
        raise OutputsError(f"{shown(path)} holds no stack outputs; run make deploy again.")
    if stack in stacks:
        outputs = stacks[stack]
    elif len(stacks) == 1:
        outputs = next(iter(stacks.values()))
    else:
        raise OutputsError(
            f"{shown(path)} holds the stacks {', '.join(sorted(stacks))} but not {stack!r}."
        )
    if not isinstance(outputs, dict):
        raise OutputsError(f"{shown(path)}: the outputs of {stack!r} are not an object.")
    return {str(k): str(v) for k, v in outputs.items()}


def require(outputs: Mapping[str, str], *names: str, path: Path = OUTPUTS_FILE) -> list[str]:
    """The values of ``names``; an error names the missing ones."""
    missing = [name for name in names if not outputs.get(name)]
    if missing:
        raise OutputsError(
            f"{shown(path)} has no {', '.join(missing)}: it is from an older stack; run "
            "make deploy again."
        )
    return [outputs[name] for name in names]


def summary(outputs: Mapping[str, str]) -> list[str]:
    """One line per output, ``ClientUrl`` last, so it is the line a terminal shows last."""
    names = sorted(name for name in outputs if name != CLIENT_URL)
    width = max((len(name) for name in [*names, CLIENT_URL]), default=0)
    lines = [f"  {name:<{width}}  {outputs[name]}" for name in names]
    if CLIENT_URL in outputs:
        lines.append(f"{CLIENT_URL}: {outputs[CLIENT_URL]}")
    else:
        lines.append(f"(the stack has no {CLIENT_URL} output: it hosts no client)")
    return lines


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (messages stay short)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
