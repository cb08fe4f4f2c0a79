"""VTK's error text, captured instead of printed, so a failure can be told in one line."""

from __future__ import annotations

import re
import threading

from vtkmodules.vtkCommonCore import vtkStringOutputWindow

__all__ = ["capture_vtk_errors", "take_vtk_errors"]

_errors_lock = threading.Lock()
_string_window: vtkStringOutputWindow | None = None
_seen = 0


def capture_vtk_errors() -> vtkStringOutputWindow:
    """Route VTK's error and warning text into a buffer instead of stderr (once per process)."""
    global _string_window
    with _errors_lock:
        if _string_window is None:
            _string_window = vtkStringOutputWindow()
            _string_window.SetInstance(_string_window)
        return _string_window


def take_vtk_errors() -> str:
    """VTK's error text since the last call (the string window only grows; keep an offset)."""
    global _seen, _string_window
    window = capture_vtk_errors()
    everything = str(window.GetOutput() or "")
    text, _seen = everything[_seen:], len(everything)
    if _seen > 1 << 20:
        with _errors_lock:
            _string_window, _seen = None, 0
        capture_vtk_errors()
    # Each message is "ERROR: In file.cxx, line N" then "vtkClass (0x...): what happened".
    # The first one is the cause; the rest are the pipeline reporting that it failed.
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith(("ERROR:", "Warning:")) and lines[i + 1].strip():
            return re.sub(r" \(0x[0-9a-f]+\)", "", lines[i + 1].strip())[:300]
    return ""
