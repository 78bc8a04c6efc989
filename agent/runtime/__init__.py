"""Runtime drivers behind one interface (``base.Runtime``): runc, docker, process, fake."""

from __future__ import annotations

from agent.runtime.base import (
    Capabilities,
    DeviceGrant,
    ExecResult,
    GpuDevice,
    Runtime,
    RuntimeUnavailable,
    TaskRun,
)

__all__ = ["Capabilities", "DeviceGrant", "ExecResult", "GpuDevice", "Runtime", "RuntimeUnavailable", "TaskRun"]
