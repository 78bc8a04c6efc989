"""Driver tests of the runc runtime alone (root, runc installed, writable cgroups; .ci/run
installs runc): devices, namespaces, images, its state and cgroups."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from agent.runtime.base import DeviceGrant, GpuDevice
from agent.runtime.supervised import read_json
from tests.agent.runtime_helpers import (
    PY,
    log_lines,
    make_runtime,
    run,
    wait_exit,
    wait_log,
    wait_running,
)


# --- runc only ----------------------------------------------------------------------------------
@pytest.fixture
def runc_rt(data_dir):
    return make_runtime("runc", data_dir)


async def test_runc_gpu_injection_with_fake_devices(runc_rt) -> None:
    gpus = (GpuDevice(0, "GPU-aaaa-0", "/dev/null", 1, 3), GpuDevice(1, "GPU-bbbb-1", "/dev/null", 1, 3))
    grant = DeviceGrant(gpus=(gpus[1],), control=(("/dev/nvidiactl", 1, 3),))
    code = "ls /dev/nvidia*; echo CUDA=$CUDA_VISIBLE_DEVICES NV=$NVIDIA_VISIBLE_DEVICES; echo x > /dev/nvidia1 && echo writable"
    await runc_rt.start(run("j/gpu", {"command": ["sh", "-c", code], "resources": {"gpus": [1]}}, devices=grant))
    o = await wait_exit(runc_rt, "j/gpu")
    text = "\n".join(ln.split(" ", 3)[3] for ln in log_lines(runc_rt, "j/gpu"))
    assert o.exit.exit_code == 0, text
    assert "/dev/nvidia1" in text and "/dev/nvidia0" not in text and "/dev/nvidiactl" in text
    assert "CUDA=GPU-bbbb-1 NV=GPU-bbbb-1" in text and "writable" in text


async def test_runc_network_none_has_only_loopback_and_root_is_read_only(runc_rt) -> None:
    code = "ls /sys/class/net; touch /usr/x 2>&1 || true; echo ok > /workdir/f && cat /workdir/f; id -u"
    await runc_rt.start(run("j/net", {"command": ["sh", "-c", code], "network": "none", "user": [65534, 65534]}))
    o = await wait_exit(runc_rt, "j/net")
    text = [ln.split(" ", 3)[3] for ln in log_lines(runc_rt, "j/net")]
    assert o.exit.exit_code == 0
    assert "lo" in text and not any(t.startswith("eth") for t in text)
    assert any("Read-only file system" in t for t in text)
    assert "65534" in text


def _oci_layout_from(rootfs: Path, layout: Path, tag: str = "v1") -> None:
    """Build an OCI image layout (one gzip layer) from a directory, as umoci would."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    layer = gzip.compress(raw.getvalue())
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                                          "digest": put(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": put(layer), "size": len(layer)}]}).encode()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))


async def test_runc_runs_a_program_from_its_work_dir(runc_rt) -> None:
    """The check that the program exists looked for /workdir/run.sh (or ./run.sh) in the
    image, where the task's work dir is only mounted: a script kept there (staged, or written
    by an earlier attempt) failed with 'executable not found in the image', exit 127."""
    wd = runc_rt.workdir("j/wd")
    wd.mkdir(parents=True)
    (wd / "run.sh").write_text("#!/bin/sh\necho ran $0\n")
    (wd / "run.sh").chmod(0o755)
    for attempt, command in ((1, ["/workdir/run.sh"]), (2, ["./run.sh"])):
        await runc_rt.start(run("j/wd", {"command": command}, attempt=attempt))
        o = await wait_exit(runc_rt, "j/wd", attempt)
        assert (o.exit.exit_code, o.exit.reason) == (0, ""), o.exit
        assert log_lines(runc_rt, "j/wd", attempt)[-1].endswith(f"ran {command[0]}")
    await runc_rt.start(run("j/wd", {"command": ["/workdir/nope.sh"]}, attempt=3))
    o = await wait_exit(runc_rt, "j/wd", 3)
    assert (o.exit.exit_code, o.exit.reason) == (127, "StartError"), o.exit


async def test_runc_a_program_that_cannot_be_run_is_a_start_error(runc_rt) -> None:
    """A script without its execute bit, or a directory, as the command: tini's exec failed in
    the container and the task exited 126 as an ordinary Error (restarted by OnFailure, again
    and again); the process runtime says StartError 'permission denied'. So does runc now."""
    wd = runc_rt.workdir("j/noexec")
    wd.mkdir(parents=True)
    (wd / "run.sh").write_text("#!/bin/sh\necho ran\n")
    for attempt, command in ((1, ["/workdir/run.sh"]), (2, ["/workdir"])):
        await runc_rt.start(run("j/noexec", {"command": command}, attempt=attempt))
        o = await wait_exit(runc_rt, "j/noexec", attempt)
        assert (o.exit.exit_code, o.exit.reason) == (126, "StartError"), o.exit
        assert "permission denied" in o.exit.message


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static not installed (apt-get install busybox-static)")
async def test_runc_oci_image_layout(runc_rt, tmp_path) -> None:
    rootfs = tmp_path / "bb"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "ls"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    layout = tmp_path / "layout"
    _oci_layout_from(rootfs, layout)
    await runc_rt.start(run("j/img", {"image": f"{layout}:v1", "command": ["sh", "-c", "echo from-image; ls /bin; exit 4"]}))
    o = await wait_exit(runc_rt, "j/img")
    text = [ln.split(" ", 3)[3] for ln in log_lines(runc_rt, "j/img")]
    assert o.exit.exit_code == 4 and "from-image" in text and "busybox" in text
    await runc_rt.start(run("j/img2", {"image": f"{layout}:nope", "command": ["sh"]}))
    o2 = await wait_exit(runc_rt, "j/img2")
    assert o2.exit.reason == "ImageError"


async def test_runc_stop_without_runcs_state_still_sends_term(runc_rt) -> None:
    """runc's state dir (<data-dir>/runc) removed behind the agent's back: 'runc kill' no longer
    knows the container, so the stop's SIGTERM never reached the task, which was SIGKILLed at
    the end of its grace period instead of ending on its own. The supervisor signals the
    container's init (tini, which passes it on) itself when runc cannot."""
    code = "import signal,sys,time\nsignal.signal(signal.SIGTERM, lambda *a: (print('got TERM', flush=True), sys.exit(0)))\nprint('ready', flush=True)\ntime.sleep(300)"
    await runc_rt.start(run("j/norunc", {"command": [PY, "-c", code]}))
    await wait_running(runc_rt, "j/norunc")
    await wait_log(runc_rt, "j/norunc", "ready")
    shutil.rmtree(runc_rt.root)
    await runc_rt.stop("j/norunc", 1, 30.0)
    o = await wait_exit(runc_rt, "j/norunc", timeout_s=20)
    assert (o.exit.exit_code, o.exit.signal) == (0, None), o.exit
    assert any(ln.endswith("got TERM") for ln in log_lines(runc_rt, "j/norunc"))


async def test_runc_cleanup_removes_container_cgroups_and_bundle(runc_rt) -> None:
    await runc_rt.start(run("j/cl", {"command": ["sleep", "300"], "resources": {"memory_mib": 64}}))
    await wait_running(runc_rt, "j/cl")
    handle = read_json(runc_rt.attempt_dir("j/cl", 1) / "handle.json")
    mem = Path("/sys/fs/cgroup/memory") / runc_rt.cgroup_parent / handle["id"]
    assert mem.is_dir()
    await runc_rt.stop("j/cl", 1, 5)
    await wait_exit(runc_rt, "j/cl")
    await runc_rt.cleanup("j/cl", 1)
    assert not mem.exists() and not (runc_rt.attempt_dir("j/cl", 1) / "bundle").exists()
    assert (runc_rt.attempt_dir("j/cl", 1) / "output.log").exists()  # logs are kept
    assert await runc_rt.list_containers() == []
    with contextlib.suppress(FileNotFoundError):
        assert not any((Path("/sys/fs/cgroup/memory") / runc_rt.cgroup_parent).iterdir())


async def test_runc_per_job_network_namespace(runc_rt) -> None:
    """Tasks of one job share a loopback-only namespace; another job's task cannot reach them."""
    server = ("import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
              "s.bind(('127.0.0.1', 7411)); s.listen(1); print('listening', flush=True)\n"
              "c, _ = s.accept(); c.sendall(b'hello-from-job-a'); c.close()")
    client = ("import socket, time\nfor _ in range(100):\n    try:\n"
              "        c = socket.create_connection(('127.0.0.1', 7411), timeout=1); print(c.recv(100).decode()); break\n"
              "    except OSError as e:\n        err = e; time.sleep(0.05)\nelse:\n    print('refused', err)")
    await runc_rt.start(run("ja/server", {"command": [PY, "-c", server], "network": "job"}))
    await runc_rt.start(run("jb/client", {"command": [PY, "-c", client.replace("range(100)", "range(10)")], "network": "job"}))
    other = await wait_exit(runc_rt, "jb/client")
    await runc_rt.start(run("ja/client", {"command": [PY, "-c", client], "network": "job"}))
    mine = await wait_exit(runc_rt, "ja/client")
    await wait_exit(runc_rt, "ja/server")
    assert any("hello-from-job-a" in ln for ln in log_lines(runc_rt, "ja/client")), log_lines(runc_rt, "ja/client")
    assert any("refused" in ln for ln in log_lines(runc_rt, "jb/client"))
    assert mine.exit.exit_code == 0 and other.exit.exit_code == 0
    assert Path("/run/netns/" + runc_rt._netns_name("ja")).exists()
    for key in ("ja/server", "ja/client", "jb/client"):
        await runc_rt.cleanup(key, 1)
    assert not Path("/run/netns/" + runc_rt._netns_name("ja")).exists()
    assert not Path("/run/netns/" + runc_rt._netns_name("jb")).exists()
