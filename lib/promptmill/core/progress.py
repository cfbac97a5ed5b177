"""tqdm bars that stay quiet when stderr is not a terminal unless asked."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def bar(total=None, desc: str = "", unit: str = "it", unit_scale: bool = False) -> tqdm:
    disable = os.environ.get("PROMPTMILL_PROGRESS", "auto") == "0" or (
        os.environ.get("PROMPTMILL_PROGRESS", "auto") == "auto" and not sys.stderr.isatty()
    )
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=disable,
                dynamic_ncols=True, mininterval=0.5)
