"""The dashboard's view model: from the informer cache to the page's items (deterministic)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from scheduler.dashboard import model
from scheduler.informer_view import ClusterView
from scheduler.jobs import normalize_job


@dataclass
class KV:
    key: bytes
    value: bytes
    create_revision: int = 1
    mod_revision: int = 1
    version: int = 1


def view_of(docs: dict[str, object]) -> ClusterView:
    v = ClusterView()
    v.replace([KV(k.encode(), json.dumps(d).encode(), i + 1, i + 1) for i, (k, d) in enumerate(docs.items())], 100)
    return v


def node(name: str, rack: str, gpus: int = 4, gpu_ok: bool = True) -> dict[str, object]:
    return {"name": name, "gpus": gpus, "gpu_type": "A100", "rack": rack, "healthy": True,
            "conditions": [{"type": "GPUHealthy", "status": "True" if gpu_ok else "False"}],
            "agent": {"url": f"http://{name}:1"}}


def spec(name: str, tenant: str, gpus: int, replicas: int = 1, at: float = 1.0) -> dict[str, object]:
    """A job as jobctl submit stores it (the view skips a spec that is not in the stored form)."""
    return normalize_job({"name": name, "tenant": tenant, "priority": 0, "tasks": [
        {"name": "w", "replicas": replicas, "command": ["sleep", "1"], "resources": {"gpus": gpus}}]}, submitted_at=at)


def cluster() -> ClusterView:
    return view_of({
        "/registry/nodes/n10": node("n10", "rack-1"),
        "/registry/nodes/n2": node("n2", "rack-1"),
        "/registry/nodes/n3": node("n3", "rack-0", gpu_ok=False),
        "/registry/nodes/n4": node("n4", "rack-0"),
        "/registry/leases/n10": {"holder": "n10"}, "/registry/leases/n2": {"holder": "n2"},
        "/registry/leases/n3": {"holder": "n3"},  # n4 has no heartbeat: its agent is gone
        "/registry/cordons/n2": {"node": "n2"},
        "/registry/alloc/n10": {"node": "n10", "jobs": {"train": {"gpus": [1, 3]}}},
        "/registry/jobs/train": spec("train", "vision", 2),
        "/registry/jobstatus/train": {"phase": "Running", "reason": "Bound", "message": "bound",
                                      "placement": [{"task": "w-0", "node": "n10", "rack": "rack-1", "gpus": [1, 3]}],
                                      "bound_at": 5.0},
        "/registry/jobs/big": spec("big", "vision", 8, replicas=2, at=3.0),
        "/registry/jobstatus/big": {"phase": "Pending", "reason": "Unschedulable",
                                    "message": "no node has 8 free GPUs"},
        "/registry/jobs/new": spec("new", "nlp", 1, at=2.0),
        "/registry/jobs/old": spec("old", "nlp", 1),
        "/registry/jobstatus/old": {"phase": "Succeeded", "finished_at": 9.0},
        "/registry/tenants/vision": {"name": "vision", "nominal_gpus": 8, "borrow_limit_gpus": 4},
    })


def test_racks_nodes_and_gpus() -> None:
    racks = model.rack_items(cluster())
    assert set(racks) == {"rack/rack-0", "rack/rack-1"}
    r1 = racks["rack/rack-1"]
    assert [n["name"] for n in r1["nodes"]] == ["n2", "n10"]  # natural order
    n10 = r1["nodes"][1]
    assert n10["g"] == [None, "train", None, "train"] and n10["state"] == "Ready" and not n10["cordoned"]
    assert r1["nodes"][0]["cordoned"] is True
    assert (r1["gpus"], r1["used"], r1["unhealthy"]) == (8, 2, 0)
    r0 = {n["name"]: n for n in racks["rack/rack-0"]["nodes"]}
    assert r0["n3"]["g"] == ["!"] * 4 and r0["n3"]["state"] == "Ready"  # GPUs reported unhealthy
    assert r0["n4"]["g"] == ["!"] * 4 and r0["n4"]["state"] == "NotReady"  # heartbeat gone
    assert racks["rack/rack-0"]["unhealthy"] == 8


def test_queues_quota_and_pending_reasons() -> None:
    v = cluster()
    jobs = {n: model.job_item(v, n) for n in v.jobs}
    q = model.queue_items(v, jobs)
    assert q["queue/vision"] == {"name": "vision", "defined": True, "nominal": 8, "borrow_limit": 4, "used": 2,
                                 "running": 1, "pending": [{"name": "big", "gpus": 16, "reason": "Unschedulable",
                                                            "message": "no node has 8 free GPUs"}]}
    nlp = q["queue/nlp"]
    assert nlp["defined"] is False and nlp["nominal"] is None
    assert nlp["pending"] == [{"name": "new", "gpus": 1, "reason": "Queued", "message": "waiting for the scheduler"}]


def test_an_elastic_run_counts_the_gpus_it_holds_not_its_full_size() -> None:
    el = normalize_job({"name": "el", "tenant": "vision", "min_available": 1, "tasks": [
        {"name": "w", "replicas": 4, "command": ["sleep", "1"], "resources": {"gpus": 2}}]}, submitted_at=1.0)
    v = view_of({"/registry/jobs/el": el, "/registry/jobstatus/el": {
        "phase": "Running", "reason": "Running", "message": "2 task(s) running",
        "placement": [{"task": f"w-{i}", "node": "n1", "rack": "rack-0", "gpus": [2 * i, 2 * i + 1]} for i in (0, 1)]}})
    item = model.job_item(v, "el")
    assert (item["gpus"], item["tasks"]) == (4, 2)
    assert model.queue_items(v, {"el": item})["queue/vision"]["used"] == 4
    pending = model.job_item(view_of({"/registry/jobs/el": el}), "el")
    assert (pending["gpus"], pending["tasks"]) == (8, 4)  # waiting: its full size


def test_a_job_arrays_held_elements_are_one_entry_of_the_queue_card() -> None:
    """A thousand-element array would be a thousand entries: those its limit keeps back are
    one, named as squeue names them, with their count and the first element to open."""
    from scheduler import arrays

    template = spec("sweep", "nlp", 1, at=5.0)
    docs: dict[str, object] = {}
    for element in arrays.expand(template, "0-5%2"):
        docs[f"/registry/jobs/{element['name']}"] = element
        i = element["array"]["index"]
        docs[f"/registry/jobstatus/{element['name']}"] = (
            {"phase": "Running", "reason": "Running"} if i < 2 else
            {"phase": "Pending", "reason": "JobArrayTaskLimit", "message": arrays.throttle_message(element["array"])}
            if i != 3 else {"phase": "Pending", "reason": "Suspended", "message": "suspended"})
    v = view_of(docs)
    q = model.queue_items(v, {n: model.job_item(v, n) for n in v.jobs})["queue/nlp"]
    why = "at most 2 of sweep's 6 elements run at a time, lower indices first"
    assert q["pending"] == [
        {"name": "sweep_[2,4-5%2]", "job": "sweep_2", "count": 3, "gpus": 1, "reason": "JobArrayTaskLimit", "message": why},
        {"name": "sweep_3", "gpus": 1, "reason": "Suspended", "message": "suspended"}]
    assert q["running"] == 2
    # the job list: one row for the held elements too, and the others one each
    it = model.items(v)
    assert sorted(k for k in it if k.startswith(("job/", "held/"))) == [
        "held/sweep", "job/sweep_0", "job/sweep_1", "job/sweep_3"]
    held = dict(it["held/sweep"])
    assert abs(held.pop("submitted_at") - 5.0) < 1e-3  # the first held element's
    assert held == {"name": "sweep_[2,4-5%2]", "job": "sweep_2", "count": 3, "gpus": 1, "tenant": "nlp",
                    "phase": "Pending", "reason": "JobArrayTaskLimit", "message": why}
    assert it["summary"]["jobs"] == {"Pending": 4, "Running": 2}  # the summary counts elements


def test_queues_show_this_months_gpu_hours_from_accounting() -> None:
    """``live.month_usage`` reads this month's records; a tenant with usage but no job now
    still gets its card."""
    import asyncio
    import time

    from scheduler import accounting
    from scheduler.dashboard.live import month_usage

    month = accounting.month_of(time.time())
    stored = {accounting.key(month, "vision", "a", 1): {"job": "a", "tenant": "vision", "gpu_seconds": 7200.0,
                                                         "outcome": "completed"},
              accounting.key(month, "vision", "a", 2): {"job": "a", "tenant": "vision", "gpu_seconds": 1800.0,
                                                         "outcome": "preempted"},
              accounting.key(month, "old", "b", 3): {"job": "b", "tenant": "old", "gpu_seconds": 3600.0,
                                                      "outcome": "failed"},
              accounting.key(month, "x", "c", 4): "not a record"}

    class Client:
        async def get(self, key: str, prefix: bool = False) -> object:
            assert key == f"{accounting.PREFIX}{month}/" and prefix
            return type("R", (), {"kvs": [KV(k.encode(), json.dumps(d).encode()) for k, d in stored.items()]})

    usage = asyncio.run(month_usage(Client(), time.time()))
    assert sorted(usage) == ["old", "vision"]
    v = cluster()
    q = model.queue_items(v, {n: model.job_item(v, n) for n in v.jobs}, usage)
    assert q["queue/vision"]["month"] == {"gpu_hours": 2.5, "lost_gpu_hours": 0.5}
    assert q["queue/old"]["month"] == {"gpu_hours": 1.0, "lost_gpu_hours": 1.0} and q["queue/old"]["running"] == 0
    assert "month" not in q["queue/nlp"]


def test_items_summary_and_finished_jobs_cut() -> None:
    v = cluster()
    it = model.items(v, max_jobs=3)
    assert {k for k in it if k.startswith("job/")} == {"job/train", "job/big", "job/new"}  # live jobs first
    assert it["summary"] == {"nodes": 4, "ready": 3, "gpus": 16, "used": 2, "unhealthy": 8,
                             "jobs": {"Pending": 2, "Running": 1, "Succeeded": 1}}
    assert "job/old" in model.items(v, max_jobs=4)
    assert it["job/train"]["nodes"] == ["n10"] and it["job/big"]["gpus"] == 16 and it["job/big"]["tasks"] == 2


def test_diff_sets_and_deletes_only_what_changed() -> None:
    v = cluster()
    before = model.items(v)
    assert model.diff(before, model.items(v)) is None
    v.apply([type("E", (), {"type": "DELETE", "kv": KV(b"/registry/cordons/n2", b"")})()], 101)
    v.apply([type("E", (), {"type": "PUT", "kv": KV(b"/registry/jobstatus/new", json.dumps(
        {"phase": "Running"}).encode(), 50, 102)})()], 102)
    d = model.diff(before, model.items(v))
    assert d is not None
    assert set(d["set"]) == {"rack/rack-1", "job/new", "queue/nlp", "summary"} and d["del"] == []
    v.apply([type("E", (), {"type": "DELETE", "kv": KV(b"/registry/jobs/old", b"")})()], 103)
    v.apply([type("E", (), {"type": "DELETE", "kv": KV(b"/registry/nodes/n3", b"")})()], 103)
    d3 = model.diff(before, model.items(v))
    assert d3 is not None and "job/old" in d3["del"]
    assert [n["name"] for n in d3["set"]["rack/rack-0"]["nodes"]] == ["n4"]


def test_kvraft_members_leader_and_alarms() -> None:
    st = {"leader": 0xB, "raft_term": 3, "raft_index": 40, "raft_applied_index": 39, "db_size": 4096,
          "db_size_in_use": 2048, "errors": [], "is_learner": False}
    item = model.kvraft_item(
        [{"id": 0xA, "name": "m1", "endpoint": "http://a", "status": st},
         {"id": 0xB, "name": "m2", "endpoint": "http://b", "status": st},
         {"id": 0xC, "name": "m3", "endpoint": "http://c", "error": "connection refused"}],
        [{"member_id": 0xA, "alarm": "NOSPACE"}, {"member_id": 0xB, "alarm": "NONE"}])
    assert item["leader"] == "m2"
    assert [m["leader"] for m in item["members"]] == [False, True, False]
    assert item["members"][0]["commit"] == 40 and item["members"][0]["applied"] == 39
    assert item["members"][2] == {"id": "c", "name": "m3", "endpoint": "http://c", "up": False,
                                  "error": "connection refused", "leader": False}
    assert item["alarms"] == [{"member": "m1", "alarm": "NOSPACE"}]


def test_scheduler_item_rates_from_metrics() -> None:
    text = ("# HELP x\nkvraft_scheduler_leader 1\nkvraft_scheduler_decisions_total 30\n"
            'kvraft_scheduler_queue_depth{queue="active"} 2\nkvraft_scheduler_queue_depth{queue="unschedulable"} 5\n')
    m = model.parse_metrics(text)
    prev = {"kvraft_scheduler_decisions_total": 10.0}
    jobs = {"a": {"phase": "Pending"}, "b": {"phase": "Running"}}
    s = model.scheduler_item("sched-a", m, prev, 2.0, jobs)
    assert s == {"leader": "sched-a", "pending": 1, "metrics": True, "decisions_total": 30, "decisions_per_s": 10.0,
                 "queue": {"active": 2, "backoff": 0, "unschedulable": 5}}
    assert model.scheduler_item(None, None, None, 0.0, jobs) == {"leader": "", "pending": 1, "metrics": False}


def test_scheduler_metrics_that_are_not_finite_are_skipped() -> None:
    """``+Inf`` or ``NaN`` (valid Prometheus values, from a --scheduler-url that is not a
    scheduler) made int() raise in every rebuild: the page stopped updating."""
    text = ('kvraft_scheduler_queue_depth{queue="active"} +Inf\nkvraft_scheduler_decisions_total NaN\n'
            "kvraft_scheduler_leader 1\n")
    m = model.parse_metrics(text)
    assert m == {"kvraft_scheduler_leader": 1.0}
    s = model.scheduler_item("a", m, {"kvraft_scheduler_decisions_total": 1e308}, 1.0, {})
    assert s["queue"]["active"] == 0 and s["decisions_total"] == 0


def test_job_detail_timeline_placement_and_series() -> None:
    v = cluster()
    events = [{"type": "Scheduled", "message": "bound to n10:2", "at": 5.0}]
    progress = [{"epoch": 0, "started": True}, {"epoch": 1, "loss": 0.9, "train_acc": 0.7, "test_acc": 0.8},
                {"epoch": 2, "loss": 0.5, "train_acc": 0.8, "test_acc": 0.85},
                {"epoch": 2, "loss": 0.6, "train_acc": 0.8, "test_acc": 0.84},  # resumed run redid epoch 2
                {"epoch": 2, "test_acc": 0.84, "done": True}]
    d = model.job_detail(v, "train", events, progress)
    assert d is not None
    assert [t["type"] for t in d["timeline"]] == ["Submitted", "Scheduled"]
    assert d["placement"] == [{"rack": "rack-1", "node": "n10", "gpus": [1, 3], "task": "w-0"}] and not d["last_run"]
    assert [(p["epoch"], p["loss"]) for p in d["series"]] == [(1, 0.9), (2, 0.6)]
    assert d["progress"] == {"epoch": 2, "test_acc": 0.84, "done": True}
    done = model.job_detail(v, "old", [], [])
    assert done is not None and [t["type"] for t in done["timeline"]] == ["Submitted", "Succeeded"]
    assert model.job_detail(v, "nope", [], []) is None


def test_the_live_sink_takes_keys_that_are_not_utf8() -> None:
    """Was UnicodeDecodeError out of the dashboard's informer sink for a key anyone may write
    (/registry/events/j/\\xff): the page stopped updating."""
    from scheduler.dashboard.live import LiveState, _Sink

    state = LiveState(None)
    sink = _Sink(state)
    sink.replace([KV(b"/registry/events/j/\xff", b'{"type": "Scheduled"}'),
                  KV(b"/registry/nodes/n\xfe", json.dumps(node("n", "r")).encode()),
                  KV(b"/registry/nodes/n1", json.dumps(node("n1", "r")).encode())], 5)
    sink.apply([type("Ev", (), {"type": "PUT", "kv": KV(b"/registry/scheduler/leader/\xff", b"s\xffa", 6, 6)})()], 6)
    assert set(state.view.nodes) == {"n1"} and list(state.events) == ["j"]
    assert state.leader_name() == "s\ufffda"


async def test_cancel_of_a_key_that_holds_no_job_is_a_clear_409() -> None:
    """Was AttributeError ([1].get) out of the handler: a 500 and a traceback in the log."""
    from aiohttp.test_utils import make_mocked_request

    from scheduler.dashboard.app import Dashboard, DashboardConfig

    class Got:
        def __init__(self, value: bytes) -> None:
            self.kvs = [KV(b"/registry/jobs/x", value, 3, 3)]

    d = Dashboard(DashboardConfig(endpoints=["http://127.0.0.1:1"], allow_writes=True))

    async def get(key: str) -> Got:
        return Got(value)

    d.client.get = get  # type: ignore[method-assign]
    for value in (b"[1]", b"{not json", json.dumps({"name": "y"}).encode()):
        d.live.view.replace([KV(b"/registry/jobs/x", value, 3, 3)], 3)
        req = make_mocked_request("POST", "/api/jobs/x/cancel", headers={"X-Requested-With": "kvraft-dashboard"},
                                  match_info={"job": "x"})
        resp = await d.cancel(req)
        assert resp.status == 409 and "/registry/jobs/x is not a job" in resp.text, (value, resp.text)


async def test_suspend_and_resume_from_the_job_panel_mark_the_spec_as_jobctl_does() -> None:
    """``POST /api/jobs/x/suspend|resume`` set ``suspend`` in the stored spec with a txn on its
    mod revision; the same value again writes nothing; a finished job is a 409."""
    from types import SimpleNamespace

    from aiohttp.test_utils import make_mocked_request

    from scheduler.dashboard.app import Dashboard, DashboardConfig

    d = Dashboard(DashboardConfig(endpoints=["http://127.0.0.1:1"], allow_writes=True))
    stored = {"value": json.dumps(normalize_job({"name": "x", "tasks": [{"name": "w", "command": "x"}]})).encode(),
              "mod": 3}
    writes = []

    async def get(key: str) -> object:
        return SimpleNamespace(kvs=[KV(key.encode(), stored["value"], 2, stored["mod"])])

    class Txn:
        def if_(self, *compares: object) -> Txn:
            self.compares = compares
            return self

        def then(self, *ops: object) -> Txn:
            self.ops = ops
            return self

        async def commit(self) -> object:
            (op,) = self.ops
            value = op.body["value"]  # type: ignore[attr-defined]
            writes.append(json.loads(value))
            stored["value"], stored["mod"] = value, stored["mod"] + 1  # type: ignore[operator]
            return SimpleNamespace(succeeded=True)

    d.client.get = get  # type: ignore[method-assign]
    d.client.txn = Txn  # type: ignore[method-assign]
    d.live.view.replace([KV(b"/registry/jobs/x", stored["value"], 2, 3)], 3)

    async def post(verb: str) -> tuple[int, dict[str, object]]:
        req = make_mocked_request("POST", f"/api/jobs/x/{verb}", headers={"X-Requested-With": "kvraft-dashboard"},
                                  match_info={"job": "x", "verb": verb})
        resp = await d.suspend(req)
        return resp.status, json.loads(resp.text)

    assert await post("suspend") == (200, {"job": "x", "suspended": True})
    assert [w["suspend"] for w in writes] == [True]
    assert await post("suspend") == (200, {"job": "x", "suspended": True}) and len(writes) == 1  # already so
    assert await post("resume") == (200, {"job": "x", "suspended": False})
    assert [w["suspend"] for w in writes] == [True, False]
    d.live.view.replace([KV(b"/registry/jobs/x", stored["value"], 2, 3),
                         KV(b"/registry/jobstatus/x", json.dumps({"name": "x", "phase": "Succeeded"}).encode(), 4, 4)], 4)
    status, body = await post("suspend")
    assert (status, body["error"]) == (409, "job x already finished") and len(writes) == 2
    job = model.job_item(d.live.view, "x")
    assert job["suspended"] is False and job["cancelled"] is False


async def test_an_expired_session_is_dropped_and_its_client_closed() -> None:
    """The close runs in a task the dashboard keeps (the loop holds tasks only weakly), and
    stopping the dashboard waits for it. (Not in test_login.py: its module-scoped browser
    keeps playwright's event loop running in the thread, where an async test cannot run.)"""
    import asyncio
    import time
    from types import SimpleNamespace

    from scheduler.dashboard.app import COOKIE, Dashboard, DashboardConfig, Session

    closed = []

    class FakeClient:
        async def close(self) -> None:
            await asyncio.sleep(0.05)
            closed.append(True)

    dash = Dashboard(DashboardConfig(endpoints=["127.0.0.1:1"]))
    dash.sessions["old"] = Session("alice", FakeClient(), False, time.time() - 1)  # type: ignore[arg-type]
    dash.sessions["new"] = Session("bob", FakeClient(), False, time.time() + 60)  # type: ignore[arg-type]
    assert dash.session(SimpleNamespace(cookies={COOKIE: "old"})) is None  # type: ignore[arg-type]
    assert "old" not in dash.sessions and len(dash._closing) == 1
    assert dash.session(SimpleNamespace(cookies={COOKIE: "new"})).user == "bob"  # type: ignore[arg-type,union-attr]
    await dash.stop(None)  # type: ignore[arg-type]
    assert len(closed) == 2 and not dash._closing  # the expired one's, then the live one's


def test_a_progress_record_with_nan_or_infinity_is_sent_as_valid_json() -> None:
    """A diverged training run writes ``"loss": NaN`` (Python's json.dumps does): it went to the
    page as NaN, which is not JSON, so the browser's JSON.parse threw on the stream's message
    and on the job panel. Values that are not finite numbers are null now."""
    rec = model.progress_record(b'{"epoch": 4, "loss": NaN, "a": Infinity, "b": -Infinity, "c": 1e999, "d": 0.5}')
    assert rec == {"epoch": 4, "loss": None, "a": None, "b": None, "c": None, "d": 0.5}

    def strict(text: str) -> object:
        def refuse(constant: str) -> object:
            raise ValueError(constant)
        return json.loads(text, parse_constant=refuse)

    d = model.job_detail(cluster(), "train", [], [rec])
    assert d is not None and strict(json.dumps(d))["series"][-1]["loss"] is None  # type: ignore[index]
