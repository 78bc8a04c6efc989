// kvraft dashboard: one EventSource; the server sends the whole state first, then diffs.
"use strict";
(function () {
  const items = new Map();
  const gpuMap = new Map();  // node -> its GPUs (null free, "!" unhealthy, else the job)
  const marks = window.__marks = { script: performance.now() };  // timings the benchmark reads
  let session = { auth: false, user: null, can_write: false };
  let source = null;
  let openJob = null;
  let detailTimer = null;
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const hue = (name) => { let h = 0; for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0; return h % 360; };
  const jobColor = (name) => `hsl(${hue(name)} 62% 48%)`;
  const ago = (t) => {
    if (!t) return "";
    const s = Math.max(0, Date.now() / 1000 - t);
    return s < 90 ? `${Math.round(s)}s` : s < 5400 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
  };
  const bytes = (n) => n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GiB` : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB`
    : `${(n / 1024).toFixed(0)} KiB`;

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    opts.headers["X-Requested-With"] = "kvraft-dashboard";
    const r = await fetch(path, opts);
    const body = await r.json().catch(() => ({}));
    if (r.status === 401) showLogin();
    if (!r.ok) throw new Error(body.error || `${r.status}`);
    return body;
  }

  // --- session and login ---------------------------------------------------------------------
  async function start() {
    // the stream and the session in parallel: with auth on and no session the stream is
    // refused (401) and the session answer shows the login form
    if (!source) connect();
    const first = $("first-state");
    if (first) { apply(JSON.parse(first.textContent)); first.remove(); }
    session = await api("/api/session");
    $("user").textContent = session.user ? `${session.user}${session.can_write ? "" : " (read-only)"}` :
      (session.can_write ? "" : "read-only");
    $("logout").hidden = !(session.auth && session.user);
    if (session.auth && !session.user) { showLogin(); return; }
    $("login").hidden = true;
    $("main").hidden = false;
    if (!source) connect();
  }
  function showLogin() {
    if (source) { source.close(); source = null; }
    $("main").hidden = true;
    $("login").hidden = false;
    $("conn").textContent = "logged out";
    $("conn").className = "conn off";
  }
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    $("login-error").textContent = "";
    try {
      await api("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user: f.user.value, password: f.password.value }) });
      f.password.value = "";
      start();
    } catch (e) { $("login-error").textContent = e.message; }
  });
  $("logout").addEventListener("click", async () => { await api("/api/logout", { method: "POST" }); location.reload(); });

  // --- the stream ----------------------------------------------------------------------------
  function connect() {
    source = new EventSource("/api/stream");
    source.onopen = () => {
      if (!marks.open) marks.open = performance.now(); $("conn").textContent = "live"; $("conn").className = "conn on"; };
    source.onerror = () => {
      $("conn").textContent = "reconnecting"; $("conn").className = "conn off";
      api("/api/session").then((s) => { if (s.auth && !s.user) showLogin(); }).catch(() => {});
    };
    source.addEventListener("logout", showLogin);
    source.onmessage = (ev) => {
      if (!marks.message) marks.message = performance.now();
      const msg = JSON.parse(ev.data);
      if (!marks.parsed) marks.parsed = performance.now();
      apply(msg);
      if (!marks.applied) marks.applied = performance.now();
    };
  }

  let shownSeq = -1;
  function apply(msg) {
    if (msg.progress) { onProgress(msg.progress); return; }
    if (msg.snapshot && msg.seq === shownSeq) return;  // the state the page came with
    if (msg.seq !== undefined) shownSeq = msg.seq;
    const touched = new Set();
    let all = false;
    if (msg.snapshot && items.size) {  // a newer whole state (a reconnect): redraw what differs
      for (const k of [...items.keys()]) if (!(k in msg.snapshot)) { items.delete(k); touched.add(k); }
      for (const [k, v] of Object.entries(msg.snapshot)) {
        if (JSON.stringify(items.get(k)) !== JSON.stringify(v)) { items.set(k, v); touched.add(k); }
      }
    } else if (msg.snapshot) {
      all = true;
      for (const [k, v] of Object.entries(msg.snapshot)) { items.set(k, v); touched.add(k); }
    } else {
      for (const [k, v] of Object.entries(msg.set || {})) { items.set(k, v); touched.add(k); }
      for (const k of msg.del || []) { items.delete(k); touched.add(k); }
    }
    render(touched, all);
    document.body.dataset.seq = msg.seq;
    document.body.dataset.revision = msg.revision;
    if (msg.snapshot && !window.__firstRenderMs) {  // after the frame that shows it is painted
      requestAnimationFrame(() => setTimeout(() => { window.__firstRenderMs = window.__firstRenderMs || performance.now(); }, 0));
    }
  }

  function render(touched, all) {
    const kinds = new Set([...touched].map((k) => k.split("/")[0]));
    if (all) $("racks").innerHTML = "";
    // racks: heads first, then the node rows of the racks near the viewport only; the others
    // are filled when they scroll into view (1,000 node rows are most of a first render)
    const racks = [...touched].filter((k) => k.startsWith("rack/")).map(renderRack).filter(Boolean);
    const near = window.innerHeight;
    for (const el of racks) {
      if (el.getBoundingClientRect().top < near) fillRack(el); else el.dataset.stale = "1";
    }
    if (kinds.has("queue") || kinds.has("job")) renderQueues();
    if (kinds.has("job")) renderJobs();
    if (kinds.has("summary")) renderSummary();
    if (kinds.has("kvraft")) renderKvraft();
    if (kinds.has("scheduler")) renderScheduler();
    if (openJob && touched.has(`job/${openJob}`)) refreshDetail();
  }

  // --- views ---------------------------------------------------------------------------------
  function renderSummary() {
    const s = items.get("summary");
    if (!s) return;
    const phases = Object.entries(s.jobs).map(([p, n]) => `<span class="phase ${p}">${esc(p)} ${n}</span>`).join(" ");
    $("summary").innerHTML = `<b>${s.ready}</b>/${s.nodes} nodes ready · <b>${s.used}</b>/${s.gpus} GPUs used` +
      (s.unhealthy ? ` · <b class="bad-text">${s.unhealthy}</b> unhealthy` : "") + ` · ${phases}`;
  }

  function renderRack(key) {
    const id = `rack-${key.slice(5)}`;
    let el = document.getElementById(id);
    const r = items.get(key);
    if (!r) { if (el) { rackObserver.unobserve(el); el.remove(); } return null; }
    if (!el) {
      el = document.createElement("div");
      el.className = "rack";
      el.id = id;
      el.dataset.rack = r.name;
      const racks = $("racks");
      const after = [...racks.children].find((c) => c.dataset.rack.localeCompare(r.name, undefined, { numeric: true }) > 0);
      racks.insertBefore(el, after || null);
      rackObserver.observe(el);
    }
    el.innerHTML = `<div class="rack-head"><b>${esc(r.name)}</b> <span>${r.used}/${r.gpus}</span>` +
      `<span class="bar"><span style="width:${r.gpus ? (100 * r.used / r.gpus).toFixed(1) : 0}%"></span></span></div>` +
      `<div class="nodes" style="min-height:${r.nodes.length * 17}px"></div>`;
    for (const n of r.nodes) gpuMap.set(n.name, n.g);
    return el;
  }

  const rackObserver = new IntersectionObserver((entries) => {
    for (const e of entries) if (e.isIntersecting && e.target.dataset.stale) fillRack(e.target);
  }, { rootMargin: "300px" });

  function fillRack(el) {
    delete el.dataset.stale;
    const r = items.get(`rack/${el.dataset.rack}`);
    if (!r) return;
    // one element per node: its GPUs are hard stops of one gradient (13 px a GPU), so 1,000
    // nodes x 8 GPUs are 1,000 boxes to lay out and paint, not 9,000
    const nodes = r.nodes.map((n) => {
      const stops = [];
      const count = {};
      n.g.forEach((g, i) => {
        const c = g === null ? "var(--free)" : g === "!" ? "var(--bad)" : jobColor(g);
        if (g !== null && g !== "!") count[g] = (count[g] || 0) + 1;
        stops.push(`${c} ${i * 13}px ${i * 13 + 11}px,transparent ${i * 13 + 11}px ${i * 13 + 13}px`);
      });
      const bg = stops.length ? `background-image:linear-gradient(90deg,${stops.join(",")})` : "";
      const jobs = Object.entries(count).map(([j, k]) => `${j}:${k}`).join(" ");
      const bad = n.g.includes("!");
      const cls = `node${n.state === "Ready" ? "" : " notready"}${n.cordoned ? " cordoned" : ""}${bad ? " sick" : ""}`;
      return `<div class="${cls}" data-node="${esc(n.name)}" data-gpus="${n.g.length}" data-jobs="${esc(jobs)}" ` +
        `title="${esc(n.name)} · ${esc(n.type)} · ${esc(n.state)}${n.cordoned ? " · cordoned" : ""}">` +
        `<span class="nname">${esc(n.name)}</span><span class="gpus" style="width:${n.g.length * 13}px;${bg}"></span></div>`;
    }).join("");
    const box = el.querySelector(".nodes");
    box.innerHTML = nodes;
    box.style.minHeight = "";
  }

  function renderQueues() {
    const qs = [...items.entries()].filter(([k]) => k.startsWith("queue/")).map(([, v]) => v);
    $("queues").innerHTML = qs.length ? qs.map((q) => {
      const quota = q.nominal == null ? "no quota" : `${q.used}/${q.nominal} GPUs` +
        (q.borrow_limit != null ? ` (+${q.borrow_limit} borrow)` : "");
      const pct = q.nominal ? Math.min(100, 100 * q.used / q.nominal) : 0;
      const pend = q.pending.map((p) => `<li class="pending" data-job="${esc(p.name)}"><a href="#job=${encodeURIComponent(p.job || p.name)}">${esc(p.name)}</a> ` +
        `<span class="gpun">${p.count ? `${p.count} × ` : ""}${p.gpus} GPU</span> <span class="reason" data-testid="pending-reason">${esc(p.reason)}</span>` +
        `<div class="msg">${esc(p.message)}</div></li>`).join("");
      const month = q.month ? ` <span class="month" data-testid="month-usage" title="GPU-hours of the runs that ended ` +
        `this month (UTC); lost: runs that failed, were preempted or cancelled (jobctl report)">this month ` +
        `${q.month.gpu_hours} GPU-h${q.month.lost_gpu_hours ? `, ${q.month.lost_gpu_hours} lost` : ""}</span>` : "";
      return `<div class="queue" data-tenant="${esc(q.name)}"><div class="qhead"><b>${esc(q.name)}</b> <span>${quota}</span> ` +
        `<span>${q.running} running, ${q.pending.reduce((n, p) => n + (p.count || 1), 0)} pending</span>${month}</div>` +
        `<span class="bar${q.used > (q.nominal || 0) ? " over" : ""}"><span style="width:${pct.toFixed(1)}%"></span></span>` +
        (pend ? `<ul>${pend}</ul>` : "") + `</div>`;
    }).join("") : `<p class="empty">No tenants or jobs yet.</p>`;
  }

  let showAllJobs = false;
  const PHASE_ORDER = { Running: 0, Pending: 1, Failed: 2, Cancelled: 3, Succeeded: 4 };
  function renderJobs() {
    // held/<array>: the elements an array's limit keeps back, one row (as squeue folds them)
    const js = [...items.entries()].filter(([k]) => k.startsWith("job/") || k.startsWith("held/")).map(([, v]) => v);
    js.sort((a, b) => (PHASE_ORDER[a.phase] ?? 9) - (PHASE_ORDER[b.phase] ?? 9) ||
      (b.submitted_at || 0) - (a.submitted_at || 0) || a.name.localeCompare(b.name));
    const shown = showAllJobs || js.length <= 100 ? js : js.slice(0, 60);  // a long table is slow to lay out
    const rows = shown.map((j) => `<tr data-job="${esc(j.job || j.name)}"${j.count ? ` data-held="${j.count}"` : ""}>` +
      `<td><span class="swatch" style="background:${jobColor(j.job || j.name)}"></span>` +
      `<a href="#job=${encodeURIComponent(j.job || j.name)}">${esc(j.name)}</a></td><td>${esc(j.tenant)}</td>` +
      `<td><span class="phase ${esc(j.phase)}" data-testid="phase">${esc(j.phase)}</span></td>` +
      `<td>${j.count ? `${j.count} &times; ${j.gpus}` : j.gpus}</td>` +
      `<td class="nodes-cell">${esc((j.nodes || []).join(", "))}</td><td class="reason-cell" title="${esc(j.message)}">${esc(j.reason)}</td></tr>`);
    if (shown.length < js.length) {
      rows.push(`<tr><td colspan="6"><a href="#" id="more-jobs">show all ${js.length} jobs</a></td></tr>`);
    }
    $("jobs").tBodies[0].innerHTML = rows.join("") || `<tr><td colspan="6" class="empty">No jobs.</td></tr>`;
    const more = $("more-jobs");
    if (more) more.onclick = (ev) => { ev.preventDefault(); showAllJobs = true; renderJobs(); };
  }

  function renderKvraft() {
    const kv = items.get("kvraft");
    if (!kv) return;
    const rows = kv.members.map((m) => m.up ?
      `<tr data-member="${esc(m.name)}"><td>${esc(m.name)}${m.leader ? ' <span class="badge">leader</span>' : ""}${m.learner ? ' <span class="badge">learner</span>' : ""}</td>` +
      `<td>${m.term}</td><td>${m.commit}</td><td>${m.applied}</td><td>${bytes(m.db_size)}</td></tr>` :
      `<tr data-member="${esc(m.name)}" class="down"><td>${esc(m.name)}</td><td colspan="4">unreachable: ${esc(m.error)}</td></tr>`).join("");
    const alarms = kv.alarms.length ? kv.alarms.map((a) => `<span class="alarm">${esc(a.alarm)} on ${esc(a.member)}</span>`).join(" ")
      : `<span class="ok">no alarms</span>`;
    $("kvraft").innerHTML = `<div class="table-wrap"><table><thead><tr><th>member</th><th>term</th><th>commit</th><th>applied</th>` +
      `<th>db size</th></tr></thead><tbody>${rows}</tbody></table></div><p>${alarms}</p>`;
  }

  function renderScheduler() {
    const s = items.get("scheduler");
    if (!s) return;
    const q = s.queue ? `active ${s.queue.active}, backoff ${s.queue.backoff}, unschedulable ${s.queue.unschedulable}` :
      `${s.pending} pending`;
    $("scheduler").innerHTML = `<dl><dt>leader</dt><dd data-testid="sched-leader">${esc(s.leader || "none")}</dd>` +
      `<dt>queue</dt><dd>${q}</dd><dt>decisions/s</dt><dd>${s.decisions_per_s != null ? s.decisions_per_s :
        (s.metrics ? "…" : "n/a (no --scheduler-url)")}</dd>` +
      (s.decisions_total != null ? `<dt>bindings</dt><dd>${s.decisions_total}</dd>` : "") + `</dl>`;
  }

  // --- job panel -----------------------------------------------------------------------------
  let detail = null;
  async function showJob(name) {
    openJob = name;
    $("detail").hidden = false;
    $("detail-body").innerHTML = `<p>loading ${esc(name)}…</p>`;
    await refreshDetail(true);
  }
  function refreshDetail(now) {
    clearTimeout(detailTimer);
    const name = openJob;
    const go = async () => {
      try { detail = await api(`/api/jobs/${encodeURIComponent(name)}`); } catch (e) {
        if (openJob === name) $("detail-body").innerHTML = `<p class="error">${esc(e.message)}</p>`; return;
      }
      if (openJob === name) drawDetail();
    };
    if (now) return go();
    detailTimer = setTimeout(go, 150);
  }
  function onProgress(p) {
    if (!detail || p.job !== openJob) return;
    refreshDetail();
  }
  function drawDetail() {
    const d = detail;
    const tl = d.timeline.map((t) => `<li><span class="phase ${esc(t.type)}">${esc(t.type)}</span> <span class="when">${ago(t.at)} ago</span> ${esc(t.message)}</li>`).join("");
    const pl = d.placement.map((p) => `<tr><td>${esc(p.rack)}</td><td>${esc(p.node)}</td><td>${esc(p.gpus.join(","))}</td><td>${esc(p.task)}</td></tr>`).join("");
    const last = d.progress ? Object.entries(d.progress).filter(([k]) => ["epoch", "loss", "train_acc", "test_acc", "ranks", "backend"].includes(k))
      .map(([k, v]) => `${esc(k)} <b>${esc(v)}</b>`).join(" · ") : "no progress reported";
    const canCancel = session.can_write && !["Succeeded", "Failed", "Cancelled"].includes(d.phase) && !d.cancelled;
    const canRequeue = canCancel && d.phase === "Running" && d.placement.length > 0 && !d.last_run;
    $("detail-body").innerHTML = `<h2><span class="swatch" style="background:${jobColor(d.name)}"></span>${esc(d.name)} ` +
      `<span class="phase ${esc(d.phase)}" data-testid="detail-phase">${esc(d.phase)}</span></h2>` +
      `<p>${esc(d.tenant)} · ${d.gpus} GPUs in ${d.tasks} tasks · ${esc(d.reason)}: ${esc(d.message)}` +
      (d.restarts ? ` · ${d.restarts} restarts` : "") + `</p>` +
      (canCancel ? `<button id="cancel-job" class="danger">Cancel job</button>` : "") +
      (canRequeue ? ` <button id="requeue-job" title="stop this run and queue the job again; it resumes from its checkpoint">Requeue</button>` : "") +
      (canCancel ? ` <button id="suspend-job" title="${d.suspended ? "queue the job again" : "stop the job and hold it, freeing its GPUs, until resumed"}">${d.suspended ? "Resume" : "Suspend"}</button>` : "") +
      `<h3>Progress</h3><p class="progress">${last}</p>${chart(d.series)}` +
      `<h3>Placement${d.last_run ? " (last run)" : ""}</h3>` +
      (pl ? `<div class="table-wrap"><table><thead><tr><th>rack</th><th>node</th><th>gpus</th><th>task</th></tr></thead><tbody>${pl}</tbody></table></div>` : "<p>not placed</p>") +
      `<h3>Timeline</h3><ul class="timeline">${tl}</ul>` +
      `<h3>Logs</h3>` + (d.placement.length ? `<select id="log-task">${d.placement.map((p) => `<option>${esc(p.task)}</option>`).join("")}</select> ` +
        `<button id="load-logs">tail</button><pre id="logs"></pre>` : "<p>no task has run yet</p>");
    if (canCancel) $("cancel-job").onclick = async () => {
      if (!confirm(`Cancel job ${d.name}?`)) return;
      try { await api(`/api/jobs/${encodeURIComponent(d.name)}/cancel`, { method: "POST" }); } catch (e) { alert(e.message); }
    };
    if (canCancel) $("suspend-job").onclick = async () => {
      const verb = d.suspended ? "resume" : "suspend";
      if (verb === "suspend" && !confirm(`Suspend ${d.name}? A running job is stopped with its grace period; it resumes from its last checkpoint.`)) return;
      try { await api(`/api/jobs/${encodeURIComponent(d.name)}/${verb}`, { method: "POST" }); } catch (e) { alert(e.message); }
    };
    if (canRequeue) $("requeue-job").onclick = async () => {
      if (!confirm(`Stop ${d.name}'s current run and queue it again? It resumes from its last checkpoint.`)) return;
      try { await api(`/api/jobs/${encodeURIComponent(d.name)}/requeue`, { method: "POST" }); } catch (e) { alert(e.message); }
    };
    if (d.placement.length) $("load-logs").onclick = async () => {
      $("logs").textContent = "…";
      try {
        const r = await api(`/api/jobs/${encodeURIComponent(d.name)}/logs?tail=200&task=${encodeURIComponent($("log-task").value)}`);
        $("logs").textContent = r.text || "(empty)";
      } catch (e) { $("logs").textContent = e.message; }
    };
  }
  function chart(series) {
    if (!series.length) return "";
    const W = 340, H = 140, P = 28;
    const xs = (i) => P + (series.length === 1 ? 0 : (W - 2 * P) * i / (series.length - 1));
    const maxLoss = Math.max(...series.map((s) => s.loss || 0)) || 1;
    const line = (f, max) => series.map((s, i) => `${i ? "L" : "M"}${xs(i).toFixed(1)},${(H - P - (H - 2 * P) * (f(s) || 0) / max).toFixed(1)}`).join("");
    return `<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="loss and accuracy per epoch">` +
      `<line x1="${P}" y1="${H - P}" x2="${W - P}" y2="${H - P}" class="axis"/><line x1="${P}" y1="${P}" x2="${P}" y2="${H - P}" class="axis"/>` +
      `<path d="${line((s) => s.loss, maxLoss)}" class="loss"/><path d="${line((s) => s.test_acc, 1)}" class="acc"/>` +
      `<text x="${P}" y="${P - 8}" class="lbl">loss (max ${maxLoss.toFixed(3)})</text><text x="${W - P}" y="${P - 8}" class="lbl acc-t" text-anchor="end">test accuracy</text>` +
      `<text x="${W - P}" y="${H - 8}" class="lbl" text-anchor="end">epoch ${series[series.length - 1].epoch}</text></svg>`;
  }
  function closeDetail() { openJob = null; detail = null; $("detail").hidden = true; if (location.hash) history.replaceState(null, "", " "); }
  $("detail-close").onclick = closeDetail;
  function onHash() {
    const m = /^#job=(.+)$/.exec(location.hash);
    if (m) showJob(decodeURIComponent(m[1])); else if (openJob) closeDetail();
  }
  window.addEventListener("hashchange", onHash);

  const gpuAt = (ev) => {  // the GPU under the pointer in a node's strip
    const strip = ev.target.closest(".gpus");
    if (!strip) return null;
    const node = strip.closest(".node").dataset.node;
    const i = Math.floor(ev.offsetX / 13);
    const g = (gpuMap.get(node) || [])[i];
    return g === undefined ? null : { node, i, g };
  };
  $("racks").addEventListener("mousemove", (ev) => {
    const at = gpuAt(ev);
    if (at) ev.target.title = `${at.node} GPU ${at.i}: ${at.g === null ? "free" : at.g === "!" ? "unhealthy" : at.g}`;
  });

  // cordon / uncordon by clicking a node's name (writers only)
  $("racks").addEventListener("click", async (ev) => {
    const at = gpuAt(ev);
    if (at && at.g !== null && at.g !== "!") { location.hash = `job=${encodeURIComponent(at.g)}`; return; }
    const node = ev.target.closest(".node");
    if (!node || !session.can_write) return;
    const cordoned = node.classList.contains("cordoned");
    const verb = cordoned ? "uncordon" : "cordon";
    if (!confirm(`${verb} node ${node.dataset.node}?`)) return;
    try { await api(`/api/nodes/${encodeURIComponent(node.dataset.node)}/${verb}`, { method: "POST" }); } catch (e) { alert(e.message); }
  });

  start().then(onHash).catch((e) => { $("conn").textContent = e.message; });
})();
