"""``Status``: what an extension point says about a job. Expected outcomes are values.

Codes and what the queue does with them (Kubernetes' codes, with Ray's infeasible split out):

============== ========================================================= =====================
code           meaning                                                   retried when
============== ========================================================= =====================
SUCCESS        go on
UNSCHEDULABLE  does not fit now; preempting lower-ranked gangs may help   resources free up
UNRESOLVABLE   does not fit now; preemption cannot help (quota, holds)    cluster changes
INFEASIBLE     cannot fit even in the empty cluster as it is              nodes are added
WAIT           fits, but waits its turn (strict FIFO, a reservation)      next pass
============== ========================================================= =====================

Bugs are exceptions, never statuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Code", "Status", "SUCCESS"]


class Code(Enum):
    SUCCESS = "success"
    UNSCHEDULABLE = "unschedulable"
    UNRESOLVABLE = "unresolvable"
    INFEASIBLE = "infeasible"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class Status:
    code: Code = Code.SUCCESS
    message: str = ""
    plugin: str = ""
    ok: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok", self.code is Code.SUCCESS)

    @property
    def preemption_may_help(self) -> bool:
        return self.code is Code.UNSCHEDULABLE

    @staticmethod
    def unschedulable(message: str, plugin: str) -> Status:
        return Status(Code.UNSCHEDULABLE, message, plugin)

    @staticmethod
    def unresolvable(message: str, plugin: str) -> Status:
        return Status(Code.UNRESOLVABLE, message, plugin)

    @staticmethod
    def infeasible(message: str, plugin: str) -> Status:
        return Status(Code.INFEASIBLE, message, plugin)

    @staticmethod
    def wait(message: str, plugin: str) -> Status:
        return Status(Code.WAIT, message, plugin)

    def __str__(self) -> str:
        if self.ok:
            return "success"
        return f"{self.code.value} ({self.plugin}): {self.message}"


SUCCESS = Status()
