"""Ctrl-C that reaches Python even while RDKit runs.

``rdMolStandardize.Cleanup`` installs RDKit's own C-level SIGINT handler and leaves it
installed (the bug of rdkit/rdkit#9381, in another function): after the first molecule is
standardized, Ctrl-C sets a flag inside RDKit and never reaches Python, so ``qemlflow
screen`` or ``run`` could not be interrupted. The CLI process therefore blocks SIGINT in
every thread and lets one watcher thread take it with ``sigwait`` and raise
KeyboardInterrupt in the main thread, whatever handler RDKit has installed meanwhile.
"""

from __future__ import annotations

import _thread
import signal
import threading

__all__ = ["route_ctrl_c_to_python"]

_started = False


def route_ctrl_c_to_python() -> bool:
    """Block SIGINT process-wide and turn each one into a KeyboardInterrupt in the main thread.

    Call it first thing in a CLI process, before any other thread starts (threads inherit
    the signal mask). Returns False, doing nothing, where that cannot hold: not the main
    thread, other threads already running, or no ``sigwait`` on this platform.
    """
    global _started
    if _started:
        return True
    if (
        not hasattr(signal, "sigwait")
        or threading.current_thread() is not threading.main_thread()
        or threading.active_count() > 1
    ):
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def watch() -> None:
        while True:
            signal.sigwait({signal.SIGINT})
            _thread.interrupt_main()

    threading.Thread(target=watch, name="qemlflow-ctrl-c", daemon=True).start()
    _started = True
    return True
