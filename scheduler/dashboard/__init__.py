"""The live web dashboard (``kvraft-dashboard``): racks, nodes and GPUs, queues, jobs, the
kvraft members and the scheduler, followed through kvraft watches and pushed to the page over
Server-Sent Events. See docs/dashboard.md."""

__all__: list[str] = []
