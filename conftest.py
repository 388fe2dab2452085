"""Shared by every test pytest collects, doctests of src/qemlflow included.

A store's first write makes the acting OS account its owner, with a key kept in the
identity folder: the package's examples use a folder of the session's, never the user's
own ``~/.config/qemlflow`` (tests/conftest.py then gives each test one of its own).
"""

from __future__ import annotations

import os
import tempfile

os.environ["QEMLFLOW_IDENTITY_DIR"] = tempfile.mkdtemp(prefix="qemlflow-identity-")
