"""The decorator's GC hook must not swallow a Ctrl-C.

A signal that arrives during a GC pass is handled at the first Python code after it, which
was the decorator's ``gc.callbacks`` function; what a GC callback raises is printed and
lost, so a KeyboardInterrupt (here from SIGALRM, fired in the middle of each collection)
never reached the program. The callback is now a C function (``OrderedDict.move_to_end``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="setitimer")

PROGRAM = textwrap.dedent(
    """
    import gc, signal, time
    import costledger._decorator  # installs its gc callback

    junk = [[i] for i in range(400_000)]  # a collection of them takes ~30 ms here

    def on_alarm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, on_alarm)
    caught = 0
    for _ in range(5):
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.002)  # fires inside the collection
            gc.collect()
            time.sleep(0.5)
        except KeyboardInterrupt:
            caught += 1
    print(caught)
    """
)


def test_an_interrupt_during_a_gc_pass_reaches_the_program() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120
    )
    assert (out.stdout.strip(), out.stderr) == ("5", "")


def test_a_generator_closed_by_the_gc_is_told_apart_from_one_closed_by_hand() -> None:
    from costledger._decorator import _in_gc

    seen: list[bool] = []

    class Cycle:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            seen.append(_in_gc())

    import gc

    Cycle()
    gc.collect()
    assert seen == [True]
    assert _in_gc() is False
