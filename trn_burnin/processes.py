"""Child processes of a run (compiles, workers): started together, followed as they report, killed
at their deadline."""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Mapping, Sequence

PROGRESS_PREFIX = "trn-burnin-progress: "  # a child's stderr lines that say which phase it is in
Progress = Callable[[str], None]


class Child:
    """One child process: its phases (stderr lines with PROGRESS_PREFIX) go to ``on_phase`` as they
    come, its last other stderr lines are kept for a failure message, its stdout for the result."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], timeout: float,
                 on_phase: Callable[[str], None] = lambda _: None):
        self.timeout, self.on_phase, self.timed_out = timeout, on_phase, False
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self.stdout = ""
        self.process = subprocess.Popen(list(command), env=dict(env), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)

    def _kill(self) -> None:
        self.timed_out = True
        self.process.kill()

    def _read_stdout(self) -> None:
        self.stdout = self.process.stdout.read()

    def wait(self) -> "Child":
        timer = threading.Timer(self.timeout, self._kill)
        timer.start()
        reader = threading.Thread(target=self._read_stdout)
        reader.start()
        for line in self.process.stderr:
            if line.startswith(PROGRESS_PREFIX):
                self.on_phase(line[len(PROGRESS_PREFIX):].strip())
            elif line.strip():
                self.stderr_tail.append(line.strip())
        reader.join()
        self.process.wait()
        timer.cancel()
        return self

    @property
    def result_line(self) -> str | None:
        """The last stdout line of a child that exited 0 in time."""
        lines = self.stdout.strip().splitlines()
        return lines[-1] if self.process.returncode == 0 and lines and not self.timed_out else None

    def failure(self) -> str:
        if self.timed_out:
            return f"timed out after {self.timeout:.0f} s"
        detail = self.stderr_tail[-1] if self.stderr_tail else "no output"
        return f"exited {self.process.returncode}: {detail}"


def wait_all(children: Sequence[Child], on_done: Callable[[Child], None] = lambda _: None) -> list[Child]:
    """Every child followed at once, ``on_done`` called as each ends; returned in the order given."""
    with ThreadPoolExecutor(max_workers=max(1, len(children))) as pool:
        for finished in as_completed([pool.submit(child.wait) for child in children]):
            on_done(finished.result())
    return list(children)


class CoreCount:
    """'<phase>: k of n cores' lines for ``progress``, at the first core, every tenth and the last."""

    def __init__(self, total: int, progress: Progress):
        self.total, self.progress, self.counts = total, progress, {}
        self.lock = threading.Lock()

    def count(self, phase: str) -> None:
        with self.lock:
            done = self.counts[phase] = self.counts.get(phase, 0) + 1
            step = max(1, self.total // 10)
            if done in (1, self.total) or done % step == 0:
                self.progress(f"{phase}: {done} of {self.total} cores")
