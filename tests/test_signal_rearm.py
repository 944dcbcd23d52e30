"""A library that takes SIGTERM while the scan sets up (``ray.init`` installs
``sys.exit(15)``) must not change how a scan stops: exit 143, not 15."""
from __future__ import annotations

import os
import signal
import sys
import time
from types import SimpleNamespace

import pytest

from scanner.run import GracefulStop, Interrupted


def test_arm_takes_back_a_sigterm_handler_replaced_during_setup():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(signum))  # as ray.init does
        stop.arm(SimpleNamespace())  # a Ray context: no stop event, interrupt at once
        with pytest.raises(Interrupted) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert e.value.signum == signal.SIGTERM and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before  # the original handler, not Ray's
