"""Where finemem caches things it builds (base models): $FINEMEM_HOME, default ~/.cache/finemem."""

import os
from pathlib import Path


def finemem_home() -> Path:
    path = Path(os.environ.get("FINEMEM_HOME", Path.home() / ".cache" / "finemem"))
    path.mkdir(parents=True, exist_ok=True)
    return path
