/// The web dashboard: self-contained pages (no external resources). The overview listens to
/// `/api/stream` (server-sent events: the server pushes each snapshot, nobody polls) and redraws
/// the queue, jobs, workers and recent events; each job links to its page (`/jobs/ID`: segments,
/// events, errors, a thumbnail of a finished frame, and cancel / retry / priority for users who
/// logged in at `/login`). The numbers are the coordinator's `JobView`/`WorkerView`/`EventView`
/// read models, as `dubfarm status`, `jobs`, `workers` and `top` show them.
enum Dashboard {
    /// The look the pages share: colours, type, header.
    static let sharedStyle = #"""
  :root { --bg:#0f1419; --panel:#171d24; --line:#2a323c; --text:#dde3ea; --dim:#8b96a3; --accent:#3fb6a8;
          --busy:#e0b341; --bad:#e0605a; --good:#5fc26a; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--text); }
  a { color:var(--accent); }
  header { display:flex; flex-wrap:wrap; gap:.4rem 1.2rem; align-items:baseline; padding:.8rem 1rem; border-bottom:1px solid var(--line); }
  header h1 { font-size:1.1rem; margin:0; color:var(--accent); }
"""#

    /// The script helpers the pages share: `el` builds an element, `logoutForm` the session's button.
    static let sharedScript = #"""
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
};
const logoutForm = () => el("form", {method: "post", action: "/logout", style: "display:inline"}, el("button", {type: "submit", id: "logout"}, "log out"));
"""#

    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dubfarm</title>
<style>
\#(sharedStyle)
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
  <span id="session" class="dim"></span>
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
\#(sharedScript)
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
      el("td", {"data-label": "Job", class: "num"}, el("a", {href: "jobs/" + j.id}, String(j.id))),
      td("State", j.state, "state-" + j.state), el("td", {"data-label": "Progress"}, bar(progressOf(j))),
      td("Segments", j.segments.done + "/" + j.segments.total, "num"),
      td("Frames", j.framesDone + "/" + (j.frames == null ? "?" : j.frames), "num"),
      td("FPS", fps(r && r.framesPerSecond), "num"), td("ETA", terminal(j.state) ? "" : dur(r && r.etaSeconds), "num"),
      td("Video", (j.name ? j.name + " · " : "") + j.video + (j.error ? " — " + j.error : "")));
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
// Pushed by the coordinator (server-sent events); the browser reconnects by itself.
window.dubfarmUpdates = 0;
const stream = new EventSource("api/stream");
stream.addEventListener("farm", ev => {
  window.dubfarmUpdates++;
  render(JSON.parse(ev.data));
  document.getElementById("error").textContent = "";
});
stream.addEventListener("problem", ev => { document.getElementById("error").textContent = JSON.parse(ev.data); });
stream.onerror = () => { document.getElementById("error").textContent = "coordinator unreachable; reconnecting…"; };
fetch("api/session").then(r => r.json()).then(s => {
  document.getElementById("session").replaceChildren(...(s.user ? ["signed in as " + s.user + " ", logoutForm()]
    : [s.canLogIn ? el("a", {href: "login?next=/"}, "log in to act on jobs") : ""]));
}).catch(() => {});
</script>
</body>
</html>
"""#

    /// The page of one job (`/jobs/ID`): fetched from `/api/jobs/ID` when it opens and again each
    /// time the stream says the job changed; the actions post to `/api/jobs/ID/…`.
    static let jobHTML = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dubfarm job</title>
<style>
\#(sharedStyle)
  main { padding:.8rem 1rem; display:grid; gap:1rem; max-width:1200px; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:.6rem .8rem; overflow-x:auto; }
  h2 { font-size:.95rem; margin:.1rem 0 .5rem; color:var(--dim); font-weight:600; text-transform:uppercase; letter-spacing:.04em; }
  table { width:100%; border-collapse:collapse; }
  th, td { text-align:left; padding:.3rem .4rem; border-bottom:1px solid var(--line); }
  th { color:var(--dim); font-weight:500; font-size:.8rem; }
  dl { display:grid; grid-template-columns:max-content 1fr; gap:.2rem 1rem; margin:0; }
  dt { color:var(--dim); }
  dd { margin:0; }
  button, input { font:inherit; background:var(--bg); color:var(--text); border:1px solid var(--line); border-radius:4px; padding:.25rem .7rem; }
  button:hover { border-color:var(--accent); cursor:pointer; }
  button:disabled { opacity:.4; border-color:var(--line); cursor:default; }
  #actions { display:flex; flex-wrap:wrap; gap:.5rem; align-items:center; }
  #thumb img { max-width:360px; width:100%; border-radius:6px; }
  .state-running, .state-personalising, .state-leased { color:var(--busy); }
  .state-done { color:var(--good); }
  .state-failed, .state-dead, .state-cancelled { color:var(--bad); }
  #message { color:var(--bad); }
</style>
</head>
<body>
<header><h1><a href="../">dubfarm</a> · job <span id="job-id"></span></h1>
  <span id="job-state" data-state=""></span><span id="session"></span><span id="message"></span></header>
<main>
  <section><h2>Job</h2><dl id="facts"></dl></section>
  <section><h2>Actions</h2>
    <div id="actions">
      <button id="cancel" type="button">Cancel</button>
      <button id="retry" type="button">Retry</button>
      <label>priority <input id="priority" type="number" style="width:6rem"></label><button id="set-priority" type="button">Set</button>
    </div>
  </section>
  <section id="thumb" hidden><h2>A finished frame</h2><img alt="a frame of the dubbed output"></section>
  <section><h2>Segments</h2><table id="segments"><thead><tr><th>Seg</th><th>Frames</th><th>State</th><th>Worker</th>
    <th>Done</th><th>Tries</th><th>Error</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Events</h2><table id="events"><thead><tr><th>Time</th><th>Subject</th><th>Change</th><th>Worker</th>
    <th>Reason</th></tr></thead><tbody></tbody></table></section>
</main>
<script>
"use strict";
const id = Number(location.pathname.split("/").filter(x => x).pop());
\#(sharedScript)
const say = m => { document.getElementById("message").textContent = m || ""; };
let seen = null;
window.dubfarmUpdates = 0;
document.getElementById("job-id").textContent = id;
async function load() {
  const r = await fetch("../api/jobs/" + id, {cache: "no-store"});
  const p = await r.json();
  if (!r.ok) { say(p.error || r.statusText); return; }
  const j = p.detail.job;
  const st = document.getElementById("job-state");
  st.textContent = j.state; st.className = "state-" + j.state; st.dataset.state = j.state;
  const facts = [["Name", j.name], ["Labels", j.labels ? Object.entries(j.labels).map(([k, v]) => k + "=" + v).join(", ") : null],
    ["Video", j.video], ["Audio", j.audio], ["Face", j.face], ["Stage", j.stage], ["Priority", j.priority],
    ["Frames", j.frames == null ? null : j.framesDone + " / " + j.frames], ["Segments", j.segments.done + " / " + j.segments.total + " done"],
    ["Waiting", j.waitingFor], ["Error", j.error], ["Output", j.mediaRemovedAt ? "removed by gc" : j.outputBytes == null ? null : j.outputBytes + " bytes"]];
  document.getElementById("facts").replaceChildren(...facts.filter(([, v]) => v != null && v !== "").flatMap(([k, v]) =>
    [el("dt", {}, k), el("dd", {"data-fact": k.toLowerCase()}, v)]));
  const pri = document.getElementById("priority");
  if (document.activeElement !== pri) pri.value = j.priority;
  document.getElementById("cancel").disabled = ["done", "failed", "cancelled"].includes(j.state);
  document.getElementById("retry").disabled = !["failed", "cancelled"].includes(j.state);
  const thumb = document.getElementById("thumb");
  thumb.hidden = !p.hasThumbnail;
  if (p.hasThumbnail && !thumb.querySelector("img").src) thumb.querySelector("img").src = "../api/jobs/" + id + "/thumbnail";
  document.querySelector("#segments tbody").replaceChildren(...p.detail.segments.map(s => el("tr", {"data-segment": s.index, "data-state": s.state},
    el("td", {}, s.index), el("td", {}, s.startFrame + "–" + (s.endFrame - 1)), el("td", {class: "state-" + s.state}, s.state),
    el("td", {}, s.worker || ""), el("td", {}, s.framesDone + "/" + (s.endFrame - s.startFrame)), el("td", {}, s.leases), el("td", {}, s.error || ""))));
  document.querySelector("#events tbody").replaceChildren(...p.events.slice().reverse().map(e => el("tr", {"data-event": e.id},
    el("td", {}, new Date(e.at).toLocaleTimeString()), el("td", {}, e.segment == null ? e.kind : "segment " + e.segment),
    el("td", {}, [e.from, e.to].filter(x => x).join(" → ")), el("td", {}, e.worker || ""), el("td", {}, e.reason))));
}
async function act(path, body) {
  say("");
  const r = await fetch("../api/jobs/" + id + "/" + path, {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body || {})});
  if (r.status === 401) { say("log in to do that"); location.href = "../login?next=" + encodeURIComponent(location.pathname); return; }
  if (!r.ok) { const e = await r.json().catch(() => ({})); say(e.error || r.statusText); return; }
  await load();
}
document.getElementById("cancel").onclick = () => act("cancel");
document.getElementById("retry").onclick = () => act("retry");
document.getElementById("set-priority").onclick = () => act("priority", {priority: Number(document.getElementById("priority").value)});
// The stream says when anything changed; the page reloads its job only when this job did.
const stream = new EventSource("../api/stream");
stream.addEventListener("farm", ev => {
  window.dubfarmUpdates++;
  const s = JSON.parse(ev.data);
  const j = s.jobs.find(x => x.id === id);
  const mark = j ? j.state + "/" + j.updatedAt + "/" + j.framesDone + "/" + j.priority : "gone";
  if (mark !== seen) { seen = mark; load(); }
});
fetch("../api/session").then(r => r.json()).then(s => {
  document.getElementById("session").replaceChildren(...(s.user ? ["signed in as " + s.user + " ", logoutForm()]
    : [s.canLogIn ? el("a", {href: "../login?next=" + encodeURIComponent(location.pathname)}, "log in to act") : "actions need dashboard.users_file"]));
}).catch(() => {});
load();
</script>
</body>
</html>
"""#

    /// `/login`: a form that posts to itself; the server answers with a session cookie.
    static let loginHTML = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dubfarm · log in</title>
<style>
  body { margin:0; font:14px/1.4 system-ui, sans-serif; background:#0f1419; color:#dde3ea; display:grid; place-items:center; min-height:100vh; }
  form { background:#171d24; border:1px solid #2a323c; border-radius:8px; padding:1.2rem 1.4rem; display:grid; gap:.6rem; min-width:18rem; }
  h1 { font-size:1.1rem; margin:0; color:#3fb6a8; }
  input, button { font:inherit; background:#0f1419; color:#dde3ea; border:1px solid #2a323c; border-radius:4px; padding:.35rem .6rem; }
  #failed { color:#e0605a; }
</style>
</head>
<body>
<form method="post" action="/login">
  <h1>dubfarm · log in</h1>
  <span id="failed" hidden>wrong name or password</span>
  <label>Name <input name="user" id="user" autocomplete="username" required></label>
  <label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
  <input type="hidden" name="next" id="next">
  <button type="submit" id="submit">Log in</button>
</form>
<script>
const q = new URLSearchParams(location.search);
document.getElementById("next").value = q.get("next") || "/";
document.getElementById("failed").hidden = !q.get("failed");
</script>
</body>
</html>
"""#
}
