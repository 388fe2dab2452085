"""Screening: score millions of molecules with a model, streamed, resumable, distributed.

From Python (``qemlflow screen`` on the command line)::

    from qemlflow.screen import screen

    screen("model.joblib", "library.smi.gz", "scores.parquet", workers=4)
"""

from qemlflow.screen.screening import (
    ScreenInterruptedError,
    ScreenProgress,
    ScreenResult,
    screen,
)

__all__ = ["ScreenInterruptedError", "ScreenProgress", "ScreenResult", "screen"]
