"""A generator the cyclic GC closes after costledger's exit hook has run (a later atexit
hook): its ending runs on the collecting thread (nothing would run it later), once. It was
queued again and again (each run saw the GC pass again), about 200 levels deep, until a
RecursionError, swallowed: the call was lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import atexit, gc

    def late_hook():  # registered first: runs after costledger's own exit hooks
        h = Holder(); h.me = h; h.g = gen(); next(h.g); del h
        gc.collect()
        print(Recorded.rows)

    atexit.register(late_hook)

    from costledger import Tracker, track_cost

    class Recorded:
        rows = []

        def record(self, e):
            Recorded.rows.append((e.status, e.usage.input_tokens, e.usage.output_tokens))

    class Holder:
        pass

    tracker = Tracker(Recorded(), log="off")

    @track_cost(model="gpt-4o-mini", tracker=tracker)
    def gen():
        usage = {"prompt_tokens": 7, "completion_tokens": 2}
        yield {"id": "c", "model": "gpt-4o-mini", "usage": usage}
        yield {"id": "c", "model": "gpt-4o-mini"}
    """
)


def test_a_generator_collected_after_the_exit_hook_is_recorded_once() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120
    )
    assert (out.stdout.strip(), out.stderr) == ("[('cancelled', 7, 2)]", "")
