"""The finalising signals (Ctrl-C, docker stop / systemd, a closed SSH session) take one path:
the commands' subprocess tests send one or two of them; this checks each one in-process."""
from __future__ import annotations

import os
import signal
import time

import pytest

from dino_core.signals import FINALISING_SIGNALS, GracefulStop, Interrupted, interrupt_on_signals


def test_the_finalising_signals_are_the_three_that_end_a_session():
    assert set(FINALISING_SIGNALS) == {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@pytest.mark.parametrize("signum", FINALISING_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_graceful_stop_records_each_signal_once_then_interrupts(signum):
    before = signal.getsignal(signum)
    reasons = []
    with GracefulStop(reasons.append) as stop:
        os.kill(os.getpid(), signum)
        time.sleep(0.01)  # the handler runs at the next bytecode boundary
        assert stop.signum == signum and stop.exit_code == 128 + signum
        assert reasons == [f"interrupted ({signal.Signals(signum).name})"]
        with pytest.raises(Interrupted) as second:  # the second one does not wait
            os.kill(os.getpid(), signum)
            time.sleep(0.01)
        assert second.value.signum == signum
    assert signal.getsignal(signum) is before


@pytest.mark.parametrize("signum", FINALISING_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_outside_a_graceful_stop_each_signal_interrupts(signum):
    with pytest.raises(Interrupted) as raised:
        with interrupt_on_signals():
            os.kill(os.getpid(), signum)
            time.sleep(0.01)
    assert raised.value.signum == signum
