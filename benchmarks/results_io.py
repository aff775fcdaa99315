"""What every benchmark script does with its result: print a summary, save the whole as JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def save_result(result: dict[str, Any], out: str, summary: Sequence[str] | None = None) -> None:
    """Print ``result`` (only its ``summary`` keys, where given and present) and write all of it to ``out``."""
    shown = result if summary is None else {k: result[k] for k in summary if k in result}
    print(json.dumps(shown, indent=2))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(f"saved {out}", file=sys.stderr)
