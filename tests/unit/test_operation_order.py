"""The operation order mailstack has pyinfra use is pyinfra's own, computed faster."""

from types import SimpleNamespace

import pyinfra
import pytest
from pyinfra.api import util

from deploys import operation_order


def both(state):
    """pyinfra's numbers and ours, for the same caller (this frame and those above it)."""
    return util.get_operation_order_from_stack(state), operation_order.line_numbers(state)


def nested(state, depth: int):
    return nested(state, depth - 1) if depth else both(state)


@pytest.mark.parametrize("cli", [True, False])
@pytest.mark.parametrize("deploy_file", [__file__, "/elsewhere/deploy.py", None])
def test_the_same_line_numbers_as_pyinfra(monkeypatch, cli, deploy_file):
    monkeypatch.setattr(pyinfra, "is_cli", cli)
    state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=3)
    theirs, ours = nested(state, 4)
    assert ours == theirs
    if deploy_file == __file__:  # this test, nested() five times and both(), at least
        assert len(ours) >= int(cli) + 7


def test_install_swaps_it_in_once(monkeypatch):
    operations = operation_order.OPERATIONS
    monkeypatch.setattr(operations, "get_operation_order_from_stack", util.get_operation_order_from_stack)
    operation_order.install()
    operation_order.install()
    assert operations.get_operation_order_from_stack is operation_order.line_numbers
