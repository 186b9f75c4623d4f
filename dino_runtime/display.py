"""An OpenCV HighGUI window; ``q`` or Esc (or closing the window) asks the run to stop."""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from .errors import OutputError

QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27 = Esc


def check_display_available() -> None:
    """One-line error before any work when no window can be opened (Linux without X/Wayland)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        raise OutputError("no display to open a window on (DISPLAY is not set); "
                          "run with --no-display, and --save OUT.mp4 to keep the result")


class Display:
    """Show frames in one window. Must be used from the main thread (GUI toolkits require it)."""

    def __init__(self, title: str = "dino-run") -> None:
        self.title = title
        self.opened = False

    def show(self, image: np.ndarray) -> bool:
        """Draw ``image`` (H, W, 3) BGR; False once the user pressed q/Esc or closed the window."""
        if not self.opened:
            # GUI_NORMAL: no Qt toolbar, so the window holds exactly the frame.
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
            self.opened = True
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF  # also runs the GUI event loop
        if key in QUIT_KEYS:
            return False
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        if self.opened:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
            self.opened = False
