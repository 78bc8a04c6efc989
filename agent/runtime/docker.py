"""``docker``: containers through the Docker Engine API over its unix socket (aiohttp; no
docker CLI). Docker's own shim is the per-task supervisor: containers outlive the agent, and
with dockerd ``--live-restore`` they outlive dockerd too.

- The agent's containers carry labels (``kvraft.agent.node``, ``.task``, ``.attempt``,
  ``.revision``); ``observe`` and ``sweep`` list by label and never touch other containers.
- Same limits and devices as runc: ``Memory``/``MemorySwap``, ``NanoCpus``, ``CpusetCpus``,
  ``PidsLimit``, ``Devices`` (GPU and RDMA nodes), ``IPC_LOCK`` + memlock for RDMA,
  ``Init: true`` (tini as PID 1), read-only root, tmpfs ``/tmp``, the task work dir at
  ``/workdir``; logs in json-file with ``max-size`` / ``max-file`` from the agent's settings.
- ``image: host`` uses a tiny image the driver imports once (empty root with the merged-/usr
  symlinks) plus the host's ``/usr`` bound read-only -- the runc recipe; other images must
  already be present (``docker load``/``import``): the agent never pulls.
- Stop = ``kill TERM`` now and ``kill KILL`` at the deadline persisted in ``stop.json``, so an
  agent restart continues the countdown (as with the supervisor).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import resource
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from agent.reconcile import AttemptState, Observed
from agent.runtime.base import Capabilities, ExecResult, RuntimeUnavailable, TaskRun, handle_gpus
from agent.runtime.images import MERGED_USR
from agent.runtime.supervised import (
    SupervisedRuntime,
    clear_leftovers,
    container_id,
    doc_seconds,
    exit_info,
    read_handle,
    read_json,
    write_json,
)

__all__ = ["DockerRuntime", "docker_socket"]

HOST_IMAGE = "kvraft-agent/hostroot:2"
API = "http://docker/v1.41"


def docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host[len("unix://"):] if host.startswith("unix://") else host


class DockerError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"docker API {status}: {message}")
        self.status = status
        self.message = message


class DockerRuntime(SupervisedRuntime):
    name = "docker"

    def __init__(self, data_dir: Path, node: str, *, socket_path: str = "", **kwargs: Any) -> None:
        kwargs.pop("notify_socket", None)
        super().__init__(data_dir, node, **kwargs)
        self.socket_path = socket_path or docker_socket()
        if not Path(self.socket_path).exists():
            raise RuntimeUnavailable(f"no Docker socket at {self.socket_path}")
        self._session: aiohttp.ClientSession | None = None
        self._host_image_ready = False

    def capabilities(self) -> Capabilities:
        return Capabilities(isolation="container", limits=True, devices=True, network_namespaces=True,
                            oom_detect=True, reattach=True)

    # --- Engine API ------------------------------------------------------------------------
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.socket_path),
                                                  timeout=aiohttp.ClientTimeout(total=120))
        return self._session

    async def api(self, method: str, path: str, *, body: Any = None, data: bytes | None = None,
                  params: dict[str, str] | None = None, raw: bool = False) -> Any:
        kwargs: dict[str, Any] = {"params": params}
        if body is not None:
            kwargs["json"] = body
        if data is not None:
            kwargs["data"] = data
            kwargs["headers"] = {"Content-Type": "application/x-tar"}
        try:
            async with self.session().request(method, API + path, **kwargs) as resp:
                payload = await resp.read()
        except (aiohttp.ClientConnectionError, OSError) as exc:  # dockerd down, its socket gone
            raise RuntimeUnavailable(f"the Docker daemon at {self.socket_path}: {exc}") from exc
        if resp.status >= 400:
            try:
                message = json.loads(payload).get("message", payload.decode(errors="replace"))
            except ValueError:
                message = payload.decode(errors="replace")
            raise DockerError(resp.status, message)
        if raw:
            return payload
        return json.loads(payload) if payload.strip() else None

    async def ping(self) -> None:
        try:
            await self.api("GET", "/_ping", raw=True)
        except DockerError as exc:
            raise RuntimeUnavailable(f"the Docker daemon at {self.socket_path}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def ensure_host_image(self) -> None:
        if self._host_image_ready:
            return
        try:
            await self.api("GET", f"/images/{HOST_IMAGE}/json")
        except DockerError as exc:
            if exc.status != 404:
                raise
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                # sbin stays a real directory: Docker mounts its init at /sbin/docker-init, which
                # cannot be created inside the read-only /usr bind
                for d in ("usr", "etc", "proc", "sys", "dev", "tmp", "workdir", "run", "root", "sbin"):
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                for name in MERGED_USR:
                    if name != "sbin" and Path("/" + name).is_symlink():
                        info = tarfile.TarInfo(name)
                        info.type, info.linkname = tarfile.SYMTYPE, os.readlink("/" + name)
                        tar.addfile(info)
                passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/tmp:/bin/sh\n"
                group = b"root:x:0:\nnogroup:x:65534:\n"
                for name, content in (("etc/passwd", passwd), ("etc/group", group)):
                    info = tarfile.TarInfo(name)
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
            repo, _, tag = HOST_IMAGE.partition(":")
            await self.api("POST", "/images/create", data=buf.getvalue(),
                           params={"fromSrc": "-", "repo": repo, "tag": tag}, raw=True)
        self._host_image_ready = True

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self, run: TaskRun) -> None:
        adir = self.attempt_dir(run.key, run.attempt)
        if (adir / "handle.json").exists():
            return
        clear_leftovers(adir)
        adir.mkdir(parents=True, exist_ok=True)
        workdir = self.workdir(run.key)
        workdir.mkdir(parents=True, exist_ok=True)
        cid = container_id(self.node, run.key, run.attempt)
        write_json(adir / "handle.json", {"key": run.key, "attempt": run.attempt, "revision": run.revision,
                                          "runtime": self.name, "id": cid, "spec": run.spec.to_json(),
                                          "grace_s": run.spec.grace_s, "created_at": time.time()})
        self._starting.add((run.key, run.attempt))
        try:
            await self._create_and_start(run, adir, cid, workdir)
        finally:
            self._starting.discard((run.key, run.attempt))

    def _fail(self, adir: Path, cid: str, reason: str, message: str, code: int = 128) -> None:
        write_json(adir / "exit.json", {"id": cid, "exit_code": code, "signal": None, "oom_killed": False,
                                        "reason": reason, "message": message, "started_at": time.time(),
                                        "finished_at": time.time()})

    async def _create_and_start(self, run: TaskRun, adir: Path, cid: str, workdir: Path) -> None:
        spec, res = run.spec, run.spec.resources
        image = spec.image
        binds = [f"{workdir}:/workdir:rw"]
        if image in ("", "host"):
            await self.ensure_host_image()
            image = HOST_IMAGE
            binds.append("/usr:/usr:ro")
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "KVRAFT_JOB": run.job, "KVRAFT_TASK": run.task, "KVRAFT_ATTEMPT": str(run.attempt),
               "KVRAFT_WORKDIR": "/workdir", **run.devices.env(), **dict(spec.env)}
        nodes = [(f"/dev/nvidia{g.index}", g.path) for g in run.devices.gpus]
        nodes += [(p, p) for p, _, _ in run.devices.control]
        host: dict[str, Any] = {
            "NetworkMode": "none" if spec.network == "none" else "host" if spec.network in ("", "host") else spec.network,
            "Init": True, "ReadonlyRootfs": True, "Binds": binds, "Tmpfs": {"/tmp": "rw,nosuid,nodev,size=262144k"},
            "LogConfig": {"Type": "json-file", "Config": {"max-size": str(self.log_max_bytes),
                                                         "max-file": str(self.log_max_files)}},
            "Ulimits": [],
        }
        if res.rdma:
            nodes += [(p, p) for p, _, _ in run.devices.rdma]
            host["CapAdd"] = ["IPC_LOCK"]
            memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
            memlock = -1 if memlock == resource.RLIM_INFINITY else memlock
            host["Ulimits"].append({"Name": "memlock", "Soft": memlock, "Hard": memlock})
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        host["Ulimits"].append({"Name": "nofile", "Soft": nofile, "Hard": nofile})
        host["Devices"] = [{"PathOnHost": src, "PathInContainer": dst, "CgroupPermissions": "rwm"} for dst, src in nodes]
        if res.memory_mib:
            host["Memory"] = host["MemorySwap"] = res.memory_mib * 1024 * 1024
        if res.cpu_milli:
            host["NanoCpus"] = max(res.cpu_milli, 10) * 1_000_000  # Docker takes 0.01 CPU at least
        if res.cpuset:
            host["CpusetCpus"] = res.cpuset
        if res.pids:
            host["PidsLimit"] = res.pids
        body = {"Image": image, "Cmd": list(spec.command), "Env": [f"{k}={v}" for k, v in env.items()],
                "WorkingDir": spec.workdir or "/workdir", "HostConfig": host,
                "Labels": {"kvraft.agent.node": self.node, "kvraft.agent.task": run.key,
                           "kvraft.agent.attempt": str(run.attempt), "kvraft.agent.revision": str(run.revision)}}
        if spec.user:
            body["User"] = f"{spec.user[0]}:{spec.user[1]}"
        try:
            await self.api("POST", "/containers/create", body=body, params={"name": cid})
        except DockerError as exc:
            if exc.status == 404:
                self._fail(adir, cid, "ImageError", f"image {spec.image!r} not present (the agent never pulls): {exc.message}")
            elif exc.status == 409:  # created before a crash: start it below
                pass
            else:
                self._fail(adir, cid, "StartError", exc.message)
                return
            if exc.status == 404:
                return
        info = await self._inspect(cid)
        if info is not None and info.get("LogPath"):
            (adir / "log_path").write_text(info["LogPath"])
        try:
            await self.api("POST", f"/containers/{cid}/start")
        except DockerError as exc:
            code = 127 if "not found" in exc.message or "no such file" in exc.message else 128
            self._fail(adir, cid, "StartError", exc.message, code)

    async def _inspect(self, cid: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] | None = await self.api("GET", f"/containers/{cid}/json")  # its JSON object
            return info
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise

    async def _observe_one(self, adir: Path) -> Observed | None:
        if not (adir / "handle.json").exists():
            return None
        handle = read_handle(adir)
        if handle is None:
            return await self._unreadable(adir, "not this attempt's handle")
        key, attempt, cid = handle["key"], handle["attempt"], handle["id"]
        stop = read_json(adir / "stop.json")
        base = {"key": key, "attempt": attempt, "revision": handle["revision"],
                "grace_s": doc_seconds(handle, "grace_s", 30.0), "gpus": handle_gpus(handle),
                "stop_requested": stop is not None,
                "held": not (adir / "cleaned.json").exists()}
        exit_doc = read_json(adir / "exit.json")
        if exit_doc is not None:
            return Observed(state=AttemptState.EXITED, started_at_s=doc_seconds(exit_doc, "started_at"),
                            exit=exit_info(exit_doc), never_ran=exit_doc.get("never_ran") is True, **base)
        info = await self._inspect(cid)
        if info is None:
            if (key, attempt) in self._starting or time.time() - doc_seconds(handle, "created_at") < 10:
                return Observed(state=AttemptState.STARTING, **base)
            # no log_path: the container was never created (the agent died before its create)
            never_ran = not (adir / "log_path").exists()
            message = "never started (agent died while starting)" if never_ran else "container vanished"
            write_json(adir / "lost.json", {"at": time.time(), "message": message, "never_ran": never_ran})
            doc = {"exit_code": None, "reason": "Lost", "message": message, "finished_at": time.time(),
                   "never_ran": never_ran}
            write_json(adir / "exit.json", doc)
            return Observed(state=AttemptState.LOST, exit=exit_info(doc), never_ran=never_ran, **base)
        state = info["State"]
        started = _ts(state.get("StartedAt"))
        if not (adir / "log_path").exists() and info.get("LogPath"):
            (adir / "log_path").write_text(info["LogPath"])
        if state.get("Status") in ("exited", "dead"):
            doc = {"exit_code": state.get("ExitCode"), "signal": None, "oom_killed": bool(state.get("OOMKilled")),
                   "reason": "", "message": state.get("Error", ""), "started_at": started,
                   "finished_at": _ts(state.get("FinishedAt")), "log_path": info.get("LogPath", "")}
            write_json(adir / "exit.json", doc)
            return Observed(state=AttemptState.EXITED, started_at_s=started, exit=exit_info(doc), **base)
        if stop is not None and state.get("Running") and time.time() >= doc_seconds(stop, "deadline"):
            await self._kill(cid, "KILL")
        running = state.get("Running") or state.get("Status") in ("running", "paused", "restarting")
        return Observed(state=AttemptState.RUNNING if running else AttemptState.STARTING, started_at_s=started, **base)

    async def _kill(self, cid: str, sig: str) -> None:
        try:
            await self.api("POST", f"/containers/{cid}/kill", params={"signal": sig})
        except DockerError as exc:
            if exc.status not in (404, 409):
                raise

    async def stop(self, key: str, attempt: int, grace_s: float) -> None:
        adir = self.attempt_dir(key, attempt)
        handle = read_handle(adir)
        if handle is None:
            return
        if not (adir / "stop.json").exists():
            write_json(adir / "stop.json", {"signal": 15, "deadline": time.time() + grace_s, "requested_at": time.time()})
        await self._kill(handle["id"], "TERM")
        if grace_s <= 0:
            await self._kill(handle["id"], "KILL")

    async def _release(self, handle: dict[str, Any], adir: Path) -> None:
        info = await self._inspect(handle["id"])
        if info is not None and info.get("LogPath"):
            (adir / "log_path").write_text(info["LogPath"])
            for p in self._docker_logs(Path(info["LogPath"])):  # keep the logs after the container is gone
                (adir / ("docker-" + p.name)).write_bytes(p.read_bytes())
        try:
            await self.api("DELETE", f"/containers/{handle['id']}", params={"force": "1", "v": "1"})
        except DockerError as exc:
            if exc.status != 404:
                raise

    async def _kill_remains(self, handle: dict[str, Any], adir: Path) -> None:
        await self._kill(handle["id"], "KILL")

    @staticmethod
    def _docker_logs(path: Path) -> list[Path]:
        rotated = sorted((p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
                         key=lambda p: -int(p.suffix[1:]))
        return rotated + ([path] if path.exists() else [])

    def log_files(self, key: str, attempt: int) -> list[Path]:
        adir = self.attempt_dir(key, attempt)
        copied = sorted(adir.glob("docker-*"), key=lambda p: (-int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0))
        if (adir / "cleaned.json").exists() and copied:
            return copied
        try:
            return self._docker_logs(Path((adir / "log_path").read_text().strip()))
        except OSError:
            return copied

    async def stats(self, key: str, attempt: int) -> dict[str, Any]:
        handle = read_handle(self.attempt_dir(key, attempt))
        if handle is None:
            return {}
        try:
            st = await self.api("GET", f"/containers/{handle['id']}/stats", params={"stream": "false"})
        except DockerError:
            return {}
        return {"memory_bytes": st.get("memory_stats", {}).get("usage", 0),
                "cpu_ns": st.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage", 0),
                "pids": st.get("pids_stats", {}).get("current", 0)}

    async def exec(self, key: str, attempt: int, argv: list[str], timeout_s: float) -> ExecResult:
        handle = read_handle(self.attempt_dir(key, attempt))
        if handle is None:
            return ExecResult(126, b"", b"no such task attempt")
        try:
            created = await self.api("POST", f"/containers/{handle['id']}/exec",
                                     body={"Cmd": argv, "AttachStdout": True, "AttachStderr": True})
            async with asyncio.timeout(timeout_s):
                raw = await self.api("POST", f"/exec/{created['Id']}/start", body={"Detach": False}, raw=True)
            info = await self.api("GET", f"/exec/{created['Id']}/json")
        except DockerError as exc:
            return ExecResult(126, b"", exc.message.encode())
        except TimeoutError:
            return ExecResult(124, b"", b"[agent] timed out")
        out, err = demux(raw)
        return ExecResult(int(info.get("ExitCode") or 0), out, err)

    async def list_containers(self) -> list[dict[str, Any]]:
        filters = json.dumps({"label": [f"kvraft.agent.node={self.node}"]})
        return list(await self.api("GET", "/containers/json", params={"all": "1", "filters": filters}) or [])

    async def sweep(self) -> list[str]:
        removed = await self._sweep_leftovers()
        ids = set()
        for adir in self._attempt_dirs():
            handle = read_handle(adir)
            if handle and not (adir / "cleaned.json").exists():
                ids.add(handle["id"])
        for c in await self.list_containers():
            name = (c.get("Names") or ["/"])[0].lstrip("/")
            if name not in ids:
                await self.api("DELETE", f"/containers/{c['Id']}", params={"force": "1", "v": "1"})
                removed.append(name)
        return removed


def demux(raw: bytes) -> tuple[bytes, bytes]:
    """Split Docker's multiplexed stream (8-byte headers: stream, 0, 0, 0, big-endian size)."""
    out, err = bytearray(), bytearray()
    i = 0
    while i + 8 <= len(raw):
        stream, size = raw[i], int.from_bytes(raw[i + 4 : i + 8], "big")
        chunk = raw[i + 8 : i + 8 + size]
        (err if stream == 2 else out).extend(chunk)
        i += 8 + size
    return bytes(out), bytes(err)


def _ts(text: str | None) -> float:
    if not text or text.startswith("0001"):
        return 0.0
    base, _, frac = text.rstrip("Z").partition(".")
    t = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return t + (float("0." + frac[:9]) if frac else 0.0)

