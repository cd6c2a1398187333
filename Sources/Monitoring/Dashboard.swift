/// The read-only web dashboard: one self-contained page (no external resources) that polls
/// `/api/farm` every second and redraws the queue, jobs, workers and recent events. The numbers
/// are the coordinator's `JobView`/`WorkerView`/`EventView` read models, as `dubfarm status`,
/// `jobs`, `workers` and `top` show them.
enum Dashboard {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dubfarm</title>
<style>
  :root { --bg:#0f1419; --panel:#171d24; --line:#2a323c; --text:#dde3ea; --dim:#8b96a3; --accent:#3fb6a8;
          --busy:#e0b341; --bad:#e0605a; --good:#5fc26a; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; flex-wrap:wrap; gap:.4rem 1.2rem; align-items:baseline; padding:.8rem 1rem; border-bottom:1px solid var(--line); }
  header h1 { font-size:1.1rem; margin:0; color:var(--accent); }
  header .dim { color:var(--dim); }
  main { padding:.8rem 1rem; display:grid; gap:1rem; grid-template-columns: 1fr; max-width:1200px; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:.6rem .8rem; overflow-x:auto; }
  h2 { font-size:.95rem; margin:.1rem 0 .5rem; color:var(--dim); font-weight:600; text-transform:uppercase; letter-spacing:.04em; }
  table { width:100%; border-collapse:collapse; }
  th, td { text-align:left; padding:.3rem .4rem; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--dim); font-weight:500; font-size:.8rem; }
  td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
  .chips { display:flex; flex-wrap:wrap; gap:.4rem; }
  .chip { background:var(--bg); border:1px solid var(--line); border-radius:99px; padding:.15rem .6rem; font-variant-numeric: tabular-nums; }
  .chip b { font-weight:600; }
  .state-running, .state-personalising, .state-busy, .state-leased { color:var(--busy); }
  .state-done, .state-idle { color:var(--good); }
  .state-failed, .state-dead, .state-lost { color:var(--bad); }
  .progress { position:relative; min-width:120px; height:1.1rem; background:var(--bg); border:1px solid var(--line); border-radius:4px; overflow:hidden; }
  .progress .fill { position:absolute; inset:0 auto 0 0; background:var(--accent); opacity:.55; }
  .progress .label { position:relative; padding:0 .35rem; font-size:.8rem; line-height:1.1rem; font-variant-numeric: tabular-nums; }
  #events td.reason { white-space:normal; min-width:12rem; }
  #error { color:var(--bad); }
  /* Phone width: tables become stacked cards. */
  @media (max-width: 640px) {
    main { padding:.5rem; }
    thead { display:none; }
    table, tbody, tr, td { display:block; width:100%; }
    tr { border-bottom:1px solid var(--line); padding:.35rem 0; }
    td { border:none; padding:.1rem 0; white-space:normal; text-align:left !important; }
    td[data-label]::before { content: attr(data-label) ": "; color:var(--dim); font-size:.8rem; }
  }
</style>
</head>
<body>
<header>
  <h1>dubfarm</h1>
  <span class="dim">throughput <b id="throughput">–</b></span>
  <span class="dim">updated <span id="updated">never</span></span>
  <span id="error"></span>
</header>
<main>
  <section id="queue"><h2>Queue</h2>
    <div class="chips" id="queue-jobs"></div>
    <div class="chips" id="queue-segments" style="margin-top:.4rem"></div>
  </section>
  <section><h2>Jobs</h2>
    <table id="jobs"><thead><tr><th class="num">Job</th><th>State</th><th>Progress</th><th class="num">Segments</th>
      <th class="num">Frames</th><th class="num">FPS</th><th class="num">ETA</th><th>Video</th></tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Workers</h2>
    <table id="workers"><thead><tr><th>Worker</th><th>Host</th><th>State</th><th>Segment</th><th class="num">FPS</th>
      <th class="num">Heartbeat</th><th class="num">Segments</th><th class="num">Frames</th></tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Recent events</h2>
    <table id="events"><thead><tr><th>Time</th><th>Job</th><th>Subject</th><th>Change</th><th>Worker</th><th>Reason</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<script>
"use strict";
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
};
const td = (label, v, cls) => el("td", Object.assign({"data-label": label}, cls ? {class: cls} : {}), v);
const dur = s => { if (s == null || !isFinite(s)) return "--"; s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, x = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(x).padStart(2, "0"); };
const fps = v => v == null ? "-" : v.toFixed(1);
const terminal = s => s === "done" || s === "failed" || s === "cancelled";
function progressOf(j) { if (j.state === "done") return 1; if (!j.frames) return 0; return Math.min(1, j.framesDone / j.frames); }
function bar(p) {
  const pct = Math.floor(p * 100);
  return el("div", {class: "progress", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100, "data-percent": pct},
    el("div", {class: "fill", style: "width:" + (p * 100).toFixed(1) + "%"}), el("span", {class: "label"}, pct + "%"));
}
function render(s) {
  document.getElementById("throughput").textContent = s.rates.framesPerSecond == null ? "– fps" : s.rates.framesPerSecond.toFixed(1) + " fps";
  document.getElementById("updated").textContent = new Date(s.at).toLocaleTimeString();
  const chips = (id, what, order, counts) => document.getElementById(id).replaceChildren(
    ...order.map(k => el("span", {class: "chip state-" + k, "data-state": k}, what + " " + k + " ", el("b", {}, counts[k] || 0))));
  chips("queue-jobs", "jobs", ["queued","planning","personalising","running","stitching","done","failed","cancelled"], s.queue.jobs);
  chips("queue-segments", "segments", ["pending","leased","done","dead","cancelled"], s.queue.segments);
  document.querySelector("#jobs tbody").replaceChildren(...s.jobs.map(j => {
    const r = s.rates.jobs[String(j.id)];
    return el("tr", {"data-job": j.id, "data-state": j.state},
      td("Job", j.id, "num"), td("State", j.state, "state-" + j.state), el("td", {"data-label": "Progress"}, bar(progressOf(j))),
      td("Segments", j.segments.done + "/" + j.segments.total, "num"),
      td("Frames", j.framesDone + "/" + (j.frames == null ? "?" : j.frames), "num"),
      td("FPS", fps(r && r.framesPerSecond), "num"), td("ETA", terminal(j.state) ? "" : dur(r && r.etaSeconds), "num"),
      td("Video", j.video + (j.error ? " — " + j.error : "")));
  }));
  const now = Date.now();
  document.querySelector("#workers tbody").replaceChildren(...s.workers.map(w => el("tr", {"data-worker": w.name, "data-state": w.state},
    td("Worker", w.name), td("Host", w.host), td("State", w.state, "state-" + w.state), td("Segment", w.current || "-"),
    td("FPS", fps(s.rates.workers[w.name]), "num"), td("Heartbeat", Math.max(0, (Date.parse(s.at) - Date.parse(w.lastSeen)) / 1000).toFixed(1) + "s ago", "num"),
    td("Segments", w.segmentsDone, "num"), td("Frames", w.framesDone, "num"))));
  document.querySelector("#events tbody").replaceChildren(...s.events.slice(0, 30).map(e => el("tr", {"data-event": e.id},
    td("Time", new Date(e.at).toLocaleTimeString()), td("Job", e.job == null ? "" : e.job),
    td("Subject", e.segment == null ? e.kind : "segment " + e.segment), td("Change", [e.from, e.to].filter(x => x).join(" → ")),
    td("Worker", e.worker || ""), td("Reason", e.reason, "reason"))));
}
async function tick() {
  try {
    const r = await fetch("api/farm", {cache: "no-store"});
    const s = await r.json();
    if (!r.ok) throw new Error(s.error || r.statusText);
    render(s);
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "coordinator unreachable: " + e.message;
  } finally {
    setTimeout(tick, 1000);
  }
}
tick();
</script>
</body>
</html>
"""#
}
