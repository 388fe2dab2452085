"""Screening: score millions of molecules with a model, streamed, resumable, distributed.

From Python (``qemlflow screen`` on the command line)::

    from qemlflow.screen import screen

    screen("sol@production", "library.smi.gz", "scores.parquet", store=store, workers=4)
"""

from qemlflow.screen.parts import ScreenPartError
from qemlflow.screen.screening import (
    ScreenInterruptedError,
    ScreenProgress,
    ScreenResult,
    screen,
)

__all__ = ["ScreenInterruptedError", "ScreenPartError", "ScreenProgress", "ScreenResult", "screen"]
