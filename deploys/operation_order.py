"""pyinfra orders a deploy's operations by the line numbers of the deploy code that called
them (`get_operation_order_from_stack`, once per operation and host). It reads them with
`inspect.stack()`, which also loads each frame's source line and searches every loaded module
for its file: on a no-op deploy, most of the control machine's time per operation and host.
`install()` has pyinfra take the same numbers straight from the frames."""

from __future__ import annotations

import sys
from importlib import import_module

import pyinfra
from pyinfra.api import util

OPERATIONS = import_module("pyinfra.api.operation")  # the module (pyinfra.api.operation is also its decorator)


def line_numbers(state) -> list[int]:
    """What pyinfra's own function returns, for the frames of whoever called this."""
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    start = 0
    if state.current_deploy_filename:  # from the first frame of the deploy file; none without one
        start = next((i for i, frame in enumerate(frames)
                      if frame.f_code.co_filename == state.current_deploy_filename), len(frames))
    numbers = [state.current_op_file_number] if pyinfra.is_cli else []
    return numbers + [frame.f_lineno for frame in frames[start:]
                      if not frame.f_code.co_filename.startswith(util.PYINFRA_INSTALL_DIR)]


def install() -> None:
    """Swap it in where pyinfra calls it (left alone by a pyinfra without that function)."""
    if getattr(OPERATIONS, "get_operation_order_from_stack", None) is util.get_operation_order_from_stack:
        OPERATIONS.get_operation_order_from_stack = line_numbers
