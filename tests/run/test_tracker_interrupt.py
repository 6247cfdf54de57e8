"""A Ctrl-C that lands inside a write to a sqlite MLflow store must not cost the run its error text.

Found as a rare failure of ``test_ctrl_c_marks_the_run_killed`` on a loaded machine: the trainer's
interrupted write left its connection, with an open transaction, alive in a reference cycle; the
run's end then waited out sqlite's 20 s busy time-out, lost the ``gpuops.error`` tag, and only the
status got through. Here the interruption is made to happen: a timer raises ``KeyboardInterrupt``
a few milliseconds into a stream of metric writes, several times over.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from gpuops.tracking.tracker import Tracker


def _interrupt_writes(tr: Tracker, after: float) -> None:
    def boom(*_: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, boom)
    stop = threading.Event()
    main = threading.main_thread().ident

    def interrupter() -> None:
        # SIGALRM sent to the main thread itself, `after` seconds in and then every 50 ms: a
        # KeyboardInterrupt that lands where a library catches BaseException (it depends on where
        # the write was) is followed by another one, whatever other threads the process has.
        if stop.wait(after):
            return
        while not stop.is_set():
            signal.pthread_kill(main, signal.SIGALRM)  # type: ignore[arg-type]
            stop.wait(0.05)

    t = threading.Thread(target=interrupter, daemon=True)
    deadline = time.monotonic() + 60
    try:
        try:
            t.start()
            for i in range(1_000_000):
                tr.log_metrics({"train/loss": 1.0 / (i + 1)}, step=i)
                assert time.monotonic() < deadline, "no KeyboardInterrupt reached the writes in 60 s"
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            t.join(timeout=5)
    except KeyboardInterrupt:  # one more alarm, sent before the interrupter stopped
        stop.set()
        t.join(timeout=5)
    finally:
        signal.signal(signal.SIGALRM, lambda *_: None)  # a signal still pending lands here
        signal.signal(signal.SIGALRM, old)


def test_an_interrupted_write_does_not_cost_the_run_its_error_text(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for n, after in enumerate((0.004, 0.006, 0.009)):
        tr = Tracker(uri)
        run_id = tr.start("interrupted")
        _interrupt_writes(tr, after)
        ender = Tracker(uri)  # what gpuops' parent process does: another connection
        ender.run_id = run_id
        ender.finish("KILLED", f"interrupted (Ctrl-C) #{n}")
        run = ender.client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags.get("gpuops.error") == f"interrupted (Ctrl-C) #{n}"
