"""An OpenCV HighGUI window; ``q`` or Esc (or closing the window) asks the run to stop.

With ``on_box``, a box dragged with the left mouse button is handed to it (in the shown image's
pixels) when the button is released; ``keys`` maps other keys to actions (``c``: clear it).
"""
from __future__ import annotations

import os
import re
import socket
import sys
from typing import Callable

import cv2
import numpy as np

from dino_core.errors import OutputError

QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27 = Esc


def check_display_available() -> None:
    """One-line error before any work when no window can be opened.

    On Linux: DISPLAY (or WAYLAND_DISPLAY) must be set, and a local X display (``:N``) must
    accept a connection; otherwise Qt would abort the process later with a page of plugin errors.
    """
    if not sys.platform.startswith("linux"):
        return
    display = os.environ.get("DISPLAY", "")
    if not display and not os.environ.get("WAYLAND_DISPLAY"):
        raise OutputError("no display to open a window on (DISPLAY is not set); "
                          "run with --no-display, and --save OUT.mp4 to keep the result")
    if not display:
        return  # Wayland only
    # An X display name is [host]:N[.screen]; anything else makes Qt abort later.
    name = re.fullmatch(r"(.*?):(\d+)(?:\.\d+)?", display)
    if name is None:
        raise OutputError(f"DISPLAY={display!r} is not an X display name (expected :N or host:N); "
                          "fix DISPLAY, or run with --no-display and --save OUT.mp4")
    if name.group(1) in ("", "unix") and not _x_server_listening(int(name.group(2))):
        raise OutputError(f"cannot connect to the X display {display} (no server is listening); "
                          "check DISPLAY, or run with --no-display and --save OUT.mp4")


def _x_server_listening(number: int) -> bool:
    """Whether a local X server accepts connections on display ``:number``.

    X servers on Linux listen on the abstract socket and on the file socket of the same name.
    """
    path = f"/tmp/.X11-unix/X{number}"
    for address in ("\0" + path, path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            try:
                sock.connect(address)
                return True
            except OSError:
                continue
    return False


class Display:
    """Show frames in one window. Must be used from the main thread (GUI toolkits require it)."""

    def __init__(self, title: str = "dino-run",
                 on_box: Callable[[tuple[int, int, int, int]], None] | None = None,
                 keys: dict[int, Callable[[], None]] | None = None) -> None:
        self.title = title
        self.opened = False
        self.was_visible = False
        self.on_box = on_box
        self.keys = keys or {}
        self.drag: tuple[int, int, int, int] | None = None   # x0, y0, x1, y1 while dragging

    def _mouse(self, event: int, x: int, y: int, flags: int, _param) -> None:
        """Left button down, move, up: a box from the press to the release."""
        if event == cv2.EVENT_LBUTTONDOWN:
            self.drag = (x, y, x, y)
        elif self.drag is not None and event == cv2.EVENT_MOUSEMOVE:
            self.drag = (*self.drag[:2], x, y)
        elif self.drag is not None and event == cv2.EVENT_LBUTTONUP:
            x0, y0 = self.drag[:2]
            self.drag = None
            box = (min(x0, x), min(y0, y), abs(x - x0), abs(y - y0))
            if box[2] > 1 and box[3] > 1 and self.on_box is not None:   # a click is no box
                self.on_box(box)

    def show(self, image: np.ndarray) -> bool:
        """Draw ``image`` (H, W, 3) BGR; False once the user pressed q/Esc or closed the window."""
        if not self.opened:
            # GUI_NORMAL: no Qt toolbar, so the window holds exactly the frame.
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
            if self.on_box is not None:
                cv2.setMouseCallback(self.title, self._mouse)
            self.opened = True
        if self.drag is not None:  # the box being drawn
            image = cv2.rectangle(image.copy(), self.drag[:2], self.drag[2:], (255, 255, 255), 2)
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF  # also runs the GUI event loop (and the mouse callback)
        if key in QUIT_KEYS:
            return False
        if key in self.keys:
            self.keys[key]()
        visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        # A new window is not visible until the X server has mapped it, which on a loaded
        # machine takes several frames: only a window that was visible can have been closed.
        self.was_visible = self.was_visible or visible
        return visible or not self.was_visible

    def close(self) -> None:
        if self.opened:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
            self.opened = False
