"""``fake``: an in-memory runtime for tests of the daemon (no processes).

A task's command decides what happens: ``["fake", "run"]`` runs until stopped,
``["fake", "exit", "3"]`` exits 3 at once, ``["fake", "exit", "0", "0.5"]`` exits 0 after 0.5 s,
``["fake", "oom"]`` ends OOMKilled, ``["fake", "ignore-term"]`` needs SIGKILL after the grace
period, anything else fails to start (reason StartError). Tests can also end a task with
``finish(key, attempt, exit_code)``. State is lost with the object -- use the process or
runc runtime to test re-attach.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.reconcile import AttemptState, ExitInfo, Observed
from agent.runtime.base import Capabilities, ExecResult, RuntimeUnavailable, TaskRun

__all__ = ["FakeRuntime"]


@dataclass
class _Task:
    obs: Observed
    run: TaskRun
    log: list[str] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class FakeRuntime:
    name = "fake"

    def __init__(self, data_dir: Path | None = None, node: str = "fake", **_: Any) -> None:
        self.tasks: dict[tuple[str, int], _Task] = {}
        self.started: list[tuple[str, int]] = []  # every start, in order (tests count duplicates)
        self.notify: asyncio.Event | None = None
        self.down = ""  # a test's runtime outage: ping() raises RuntimeUnavailable with it

    def capabilities(self) -> Capabilities:
        return Capabilities(isolation="none", limits=False, devices=False, network_namespaces=False,
                            oom_detect=True, reattach=False)

    async def start(self, run: TaskRun) -> None:
        k = (run.key, run.attempt)
        if k in self.tasks:
            return
        self.started.append(k)
        now = time.time()
        obs = Observed(run.key, run.attempt, run.revision, AttemptState.RUNNING, started_at_s=now,
                       grace_s=run.spec.grace_s, gpus=run.spec.resources.gpus)
        t = _Task(obs, run, [f"started {run.key}#{run.attempt}"])
        self.tasks[k] = t
        cmd = list(run.spec.command)
        if cmd[:1] != ["fake"] or len(cmd) < 2 or cmd[1] not in ("run", "exit", "oom", "ignore-term"):
            self._exit(k, ExitInfo(127, None, False, now, "StartError", f"fake runtime cannot run {cmd!r}"))
        elif cmd[1] == "exit":
            code = int(cmd[2]) if len(cmd) > 2 else 0
            delay = float(cmd[3]) if len(cmd) > 3 else 0.0
            if delay:
                t.timer = asyncio.get_running_loop().call_later(delay, self.finish, run.key, run.attempt, code)
            else:
                self.finish(run.key, run.attempt, code)
        elif cmd[1] == "oom":
            self._exit(k, ExitInfo(137, 9, True, now))

    def _exit(self, k: tuple[str, int], info: ExitInfo) -> None:
        t = self.tasks.get(k)
        if t is None or t.obs.state is not AttemptState.RUNNING:
            return
        if t.timer is not None:
            t.timer.cancel()
        t.obs = replace(t.obs, state=AttemptState.EXITED, exit=info)
        t.log.append(f"exited {info.exit_code}")
        if self.notify is not None:
            self.notify.set()

    def finish(self, key: str, attempt: int, exit_code: int, signal: int | None = None) -> None:
        self._exit((key, attempt), ExitInfo(exit_code, signal, False, time.time()))

    async def observe(self) -> list[Observed]:
        return [t.obs for t in self.tasks.values()]

    async def stop(self, key: str, attempt: int, grace_s: float) -> None:
        t = self.tasks.get((key, attempt))
        if t is None or t.obs.stop_requested:
            return
        t.obs = replace(t.obs, stop_requested=True)
        if t.obs.state is not AttemptState.RUNNING:
            return
        if list(t.run.spec.command[1:2]) == ["ignore-term"]:
            asyncio.get_running_loop().call_later(grace_s, self.finish, key, attempt, 137, 9)
        else:
            self.finish(key, attempt, 143, 15)

    async def cleanup(self, key: str, attempt: int) -> None:
        t = self.tasks.get((key, attempt))
        if t is not None:
            t.obs = replace(t.obs, held=False)

    async def remove(self, key: str, attempt: int) -> None:
        self.tasks.pop((key, attempt), None)

    async def sweep(self) -> list[str]:
        return []

    def log_files(self, key: str, attempt: int) -> list[Path]:
        return []

    async def stats(self, key: str, attempt: int) -> dict[str, Any]:
        return {}

    async def exec(self, key: str, attempt: int, argv: list[str], timeout_s: float) -> ExecResult:
        return ExecResult(0, " ".join(argv).encode(), b"")

    async def ping(self) -> None:
        if self.down:
            raise RuntimeUnavailable(self.down)

    async def close(self) -> None:
        for t in self.tasks.values():
            if t.timer is not None:
                t.timer.cancel()
