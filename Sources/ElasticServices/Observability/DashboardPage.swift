/// The controller's dashboard: one self-contained page (inline CSS and JavaScript, no external
/// URL) that polls `/api/state` every second and redraws the plan, the loss curve, throughput,
/// recoveries, traffic, checkpoints and recent events.
///
/// Elements a test (or a script) can read: `#plan-grid` (a table; each slot cell has
/// `data-node`, `data-stage`, `data-replica`, `data-state`; the table has `data-stages` and
/// `data-replicas`), `#spares` (`li[data-node]`), `#loss-curve` (an SVG with `data-points`, the
/// number of committed steps drawn, and `data-last-step`), `#progress` (`data-committed`,
/// `data-total`), `#throughput` (`data-samples-per-second`), `#recoveries`, `#checkpoints`,
/// `#checkpoint-health` (`data-failing`: checkpoints failed in a row, `data-newest-step`),
/// `#traffic` (`data-ratio`), `#events` and `#members` (each with `data-count`), `#uptime`
/// (`data-pauses`: the controller's own pauses), and `body`'s
/// `data-updates` (how many state polls have been drawn) and `data-phase`.
enum DashboardPage {
    static let html: String = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>elastic · dashboard</title>
<style>
  :root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --muted:#6b7385; --line:#e2e5eb;
          --alive:#2e9d5b; --suspect:#e0a100; --dead:#d23c3c; --left:#8a93a3; --unknown:#7b5fc7; --accent:#2f6fdf; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--ink); }
  header { display:flex; gap:24px; align-items:baseline; padding:14px 20px; background:#1d2330; color:#fff; }
  header h1 { font-size:18px; margin:0; }
  header .meta { color:#c4cad6; }
  #connection { margin-left:auto; font-size:12px; }
  #connection.lost { color:#ff8a8a; }
  main { display:grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap:16px; padding:16px 20px; }
  section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; min-width:0; }
  section h2 { font-size:13px; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); margin:0 0 10px; }
  .wide { grid-column: 1 / -1; }
  .figures { display:flex; gap:28px; flex-wrap:wrap; }
  .figure b { display:block; font-size:24px; font-weight:600; }
  .figure span { color:var(--muted); font-size:12px; }
  .bar { height:8px; background:var(--line); border-radius:4px; overflow:hidden; margin-top:10px; }
  .bar div { height:100%; background:var(--accent); width:0; }
  table { border-collapse:collapse; width:100%; }
  th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
  th { color:var(--muted); font-weight:500; font-size:12px; }
  td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
  #plan-grid td.slot { border-radius:6px; border:2px solid var(--line); padding:6px 10px; }
  #plan-grid td.slot b { display:block; }
  #plan-grid td.slot small { color:var(--muted); }
  .state-alive { background:#e6f5ec; border-color:var(--alive) !important; }
  .state-suspect { background:#fdf3d7; border-color:var(--suspect) !important; }
  .state-dead { background:#fbe3e3; border-color:var(--dead) !important; }
  .state-left { background:#eef0f3; border-color:var(--left) !important; }
  .state-unknown { background:#efeafa; border-color:var(--unknown) !important; }
  .dot { display:inline-block; width:9px; height:9px; border-radius:50%; margin-right:6px; }
  .dot.alive { background:var(--alive); } .dot.suspect { background:var(--suspect); }
  .dot.dead { background:var(--dead); } .dot.left { background:var(--left); } .dot.unknown { background:var(--unknown); }
  #spares { list-style:none; padding:0; margin:8px 0 0; display:flex; gap:8px; flex-wrap:wrap; }
  #spares li { border:1px dashed var(--left); border-radius:6px; padding:2px 8px; }
  #loss-curve { width:100%; height:240px; display:block; }
  #events { list-style:none; margin:0; padding:0; max-height:320px; overflow:auto; font:12px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace; }
  #events li { padding:2px 0; border-bottom:1px solid var(--line); }
  #events time { color:var(--muted); margin-right:8px; }
  #events .kind { display:inline-block; min-width:84px; color:var(--accent); }
  .empty { color:var(--muted); font-style:italic; }
  #checkpoint-health { margin-bottom:8px; }
  #checkpoint-health.failing { color:#b3261e; font-weight:600; }
</style>
</head>
<body data-updates="0" data-phase="">
<header>
  <h1>elastic</h1>
  <span class="meta" id="job">no job</span>
  <span class="meta" id="generation">generation –</span>
  <span class="meta" id="uptime"></span>
  <span id="connection">connecting…</span>
</header>
<main>
  <section class="wide">
    <h2>Training</h2>
    <div class="figures">
      <div class="figure" id="progress" data-committed="0" data-total="0"><b>–</b><span>committed / total steps</span></div>
      <div class="figure" id="throughput" data-samples-per-second="0"><b>–</b><span>samples/s (last 20 steps)</span></div>
      <div class="figure" id="loss"><b>–</b><span>loss (last step)</span></div>
      <div class="figure" id="phase"><b>–</b><span id="phase-detail">phase</span></div>
    </div>
    <div class="bar"><div id="progress-bar"></div></div>
  </section>
  <section>
    <h2>Plan</h2>
    <table id="plan-grid" data-stages="0" data-replicas="0" data-generation="0"><tbody><tr><td class="empty">no plan yet</td></tr></tbody></table>
    <ul id="spares"></ul>
  </section>
  <section>
    <h2>Loss</h2>
    <svg id="loss-curve" data-points="0" data-last-step="-1" viewBox="0 0 600 240" preserveAspectRatio="none" role="img" aria-label="loss per committed step"></svg>
  </section>
  <section>
    <h2>Recoveries</h2>
    <table id="recoveries" data-count="0"></table>
  </section>
  <section>
    <h2>Gradient exchange</h2>
    <div id="traffic-summary"></div>
    <table id="traffic" data-ratio="1" data-count="0"></table>
  </section>
  <section>
    <h2>Checkpoints</h2>
    <div id="checkpoint-health" data-failing="0" data-newest-step=""></div>
    <table id="checkpoints" data-count="0"></table>
  </section>
  <section>
    <h2>Members</h2>
    <table id="members" data-count="0"></table>
  </section>
  <section class="wide">
    <h2>Recent events</h2>
    <ul id="events" data-count="0"></ul>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value; else node.setAttribute(key, String(value));
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0; let v = Number(n) || 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}
function secs(s) {
  if (s == null) return "–";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  return (s / 60).toFixed(1) + " min";
}
function table(node, head, rows, empty) {
  node.replaceChildren();
  node.setAttribute("data-count", rows.length);
  if (rows.length === 0) { node.append(el("tr", {}, el("td", { class: "empty" }, empty))); return; }
  node.append(el("tr", {}, ...head.map((h) => el("th", h.endsWith("#") ? { class: "num" } : {}, h.replace(/#$/, "")))));
  for (const row of rows) {
    node.append(el("tr", {}, ...row.map((cell, i) => el("td", head[i].endsWith("#") ? { class: "num" } : {}, cell))));
  }
}

function drawPlan(training, states) {
  const grid = $("plan-grid");
  const plan = training && training.plan;
  grid.replaceChildren();
  const spares = $("spares");
  spares.replaceChildren();
  if (!plan) {
    grid.setAttribute("data-stages", 0); grid.setAttribute("data-replicas", 0);
    grid.append(el("tbody", {}, el("tr", {}, el("td", { class: "empty" }, "no plan yet"))));
    return;
  }
  grid.setAttribute("data-stages", plan.stages.length);
  grid.setAttribute("data-replicas", plan.replicas);
  grid.setAttribute("data-generation", plan.generation);
  const head = el("tr", {}, el("th", {}, "stage (layers)"));
  for (let r = 0; r < plan.replicas; r++) head.append(el("th", {}, "replica " + r));
  const body = el("tbody", {}, head);
  plan.stages.forEach((stage, s) => {
    const row = el("tr", {}, el("th", {}, "stage " + s + " (" + stage.firstLayer + "–" + stage.lastLayer + ")"));
    stage.nodes.forEach((node, r) => {
      const state = states[node] || "unknown";
      row.append(el("td", { class: "slot state-" + state, "data-node": node, "data-stage": s, "data-replica": r, "data-state": state },
        el("b", {}, node), el("small", {}, state)));
    });
    body.append(row);
  });
  grid.append(body);
  for (const node of plan.spares) {
    const state = states[node] || "unknown";
    spares.append(el("li", { "data-node": node, "data-state": state }, el("span", { class: "dot " + state }), "spare " + node));
  }
}

function drawCurve(curve) {
  const svg = $("loss-curve");
  svg.replaceChildren();
  const points = curve.filter((p) => p[1] !== null && Number.isFinite(p[1]));
  svg.setAttribute("data-points", curve.length);
  svg.setAttribute("data-last-step", curve.length ? curve[curve.length - 1][0] : -1);
  const W = 600, H = 240, L = 48, R = 10, T = 10, B = 24;
  const axis = document.createElementNS(SVG, "path");
  axis.setAttribute("d", `M${L},${T} V${H - B} H${W - R}`);
  axis.setAttribute("stroke", "#9aa3b2"); axis.setAttribute("fill", "none");
  svg.append(axis);
  if (points.length === 0) {
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", W / 2); text.setAttribute("y", H / 2); text.setAttribute("text-anchor", "middle"); text.setAttribute("fill", "#6b7385");
    text.textContent = "no committed step yet";
    svg.append(text);
    return;
  }
  const steps = points.map((p) => p[0]), losses = points.map((p) => p[1]);
  const min = (a) => a.reduce((m, v) => Math.min(m, v), Infinity), max = (a) => a.reduce((m, v) => Math.max(m, v), -Infinity);
  const x0 = min(steps), x1 = Math.max(x0 + 1, max(steps));
  let y0 = min(losses), y1 = max(losses);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map((p) => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#2f6fdf"); line.setAttribute("stroke-width", "2");
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.append(line);
  const label = (x, y, text, anchor) => {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("font-size", "11"); t.setAttribute("fill", "#6b7385");
    t.setAttribute("text-anchor", anchor); t.textContent = text; svg.append(t);
  };
  label(L - 4, T + 8, y1.toFixed(3), "end");
  label(L - 4, H - B, y0.toFixed(3), "end");
  label(L, H - 6, "step " + x0, "start");
  label(W - R, H - 6, "step " + x1, "end");
}

function draw(state) {
  const training = state.training;
  const states = {};
  for (const m of state.members) states[m.node] = m.state;
  document.body.setAttribute("data-phase", training ? training.phase : "idle");
  $("generation").textContent = "generation " + state.generation;
  $("uptime").textContent = "up " + secs(state.uptime) + (state.pauses > 0 ? " · paused " + state.pauses + "× (" + secs(state.pausedSeconds) + ")" : "");
  $("uptime").setAttribute("data-pauses", state.pauses);
  $("job").textContent = training ? "job " + training.job + " · codec " + training.codec : "no job";

  const committed = training ? training.nextStep : 0, total = training ? training.totalSteps : 0;
  const progress = $("progress");
  progress.setAttribute("data-committed", committed); progress.setAttribute("data-total", total);
  progress.querySelector("b").textContent = training ? committed + " / " + total : "–";
  $("progress-bar").style.width = total ? (100 * committed / total).toFixed(1) + "%" : "0";
  const rate = training ? training.samplesPerSecond : 0;
  $("throughput").setAttribute("data-samples-per-second", rate.toFixed(1));
  $("throughput").querySelector("b").textContent = training ? rate.toFixed(0) : "–";
  $("loss").querySelector("b").textContent = training && training.loss != null && Number.isFinite(training.loss) ? training.loss.toFixed(4) : "–";
  $("phase").querySelector("b").textContent = training ? training.phase : "idle";
  $("phase-detail").textContent = training && training.detail ? training.detail : "phase";

  drawPlan(training, states);
  drawCurve(training ? training.curve : []);

  const recoveries = training ? training.recoveries.slice() : [];
  if (training && training.recovering) recoveries.push(training.recovering);
  table($("recoveries"), ["from step#", "resumed at#", "took#", "reason"],
    recoveries.slice().reverse().map((r) => [r.fromStep, r.step == null ? "in progress" : r.step, secs(r.seconds), r.reason]),
    "none: training has not been interrupted");

  const traffic = training ? training.traffic : [];
  const sent = traffic.reduce((a, t) => a + t.bytesSent, 0), raw = traffic.reduce((a, t) => a + t.uncompressedBytes, 0);
  const ratio = sent > 0 ? raw / sent : 1;
  $("traffic").setAttribute("data-ratio", ratio.toFixed(3));
  const totals = training ? training.trafficTotal : null;
  $("traffic-summary").textContent = totals
    ? "last step: " + bytes(sent) + " sent for " + bytes(raw) + " uncompressed (ratio " + ratio.toFixed(2) + ") · job total: " + bytes(totals.bytesSent) + " sent, " + bytes(totals.bytesReceived) + " received"
    : "";
  table($("traffic"), ["node", "sent#", "received#", "uncompressed#", "ratio#"],
    traffic.map((t) => [t.node, bytes(t.bytesSent), bytes(t.bytesReceived), bytes(t.uncompressedBytes), t.bytesSent > 0 ? (t.uncompressedBytes / t.bytesSent).toFixed(2) : "–"]),
    "no exchange reported (one replica per stage exchanges nothing)");

  const health = training ? training.checkpointHealth : null;
  const healthLine = $("checkpoint-health");
  healthLine.setAttribute("data-failing", health ? health.consecutiveFailures : 0);
  healthLine.setAttribute("data-newest-step", health && health.newestStep != null ? health.newestStep : "");
  healthLine.className = health && health.consecutiveFailures > 0 ? "failing" : "";
  const newest = health && health.newestStep != null
    ? "newest valid checkpoint: step " + health.newestStep + (health.newestAgeSeconds != null ? ", " + secs(health.newestAgeSeconds) + " ago" : "")
    : "no valid checkpoint yet";
  healthLine.textContent = !health ? "this job takes no checkpoints"
    : health.consecutiveFailures > 0
      ? "checkpoints are failing (" + health.consecutiveFailures + " in a row): step " + health.lastFailureStep + ": " + health.lastFailure + " · " + newest
      : newest + (health.failures > 0 ? " · " + health.failures + " failed earlier" : "");

  const checkpoints = training ? training.checkpoints.slice().reverse() : [];
  table($("checkpoints"), ["step#", "raw#", "stored#", "ratio#", "took#", "path"],
    checkpoints.map((c) => [c.step, bytes(c.rawBytes), bytes(c.storedBytes), c.storedBytes > 0 ? (c.rawBytes / c.storedBytes).toFixed(3) : "–", secs(c.seconds), c.path]),
    "none committed by this controller");

  table($("members"), ["node", "state", "incarnation#", "address", "heard#", "note"],
    state.members.map((m) => [el("span", {}, el("span", { class: "dot " + m.state }), m.node), m.state, m.incarnation, m.address, m.state === "alive" || m.state === "suspect" ? secs(m.lastHeardMs / 1000) + " ago" : "–", m.note]),
    "no members");

  const events = $("events");
  events.replaceChildren();
  events.setAttribute("data-count", state.events.length);
  for (const e of state.events.slice().reverse()) {
    events.append(el("li", { "data-kind": e.kind }, el("time", {}, e.time.replace("T", " ").replace(/\.\d+Z$/, "Z")), el("span", { class: "kind" }, e.kind), e.text));
  }
  if (state.events.length === 0) events.append(el("li", { class: "empty" }, "no events yet"));
}

let updates = 0;
async function poll() {
  try {
    const response = await fetch("/api/state", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    draw(await response.json());
    updates++;
    document.body.setAttribute("data-updates", updates);
    $("connection").textContent = "live · " + new Date().toLocaleTimeString();
    $("connection").className = "";
  } catch (error) {
    $("connection").textContent = "cannot reach the controller (" + error.message + "); retrying";
    $("connection").className = "lost";
  } finally {
    setTimeout(poll, 1000);
  }
}
poll();
</script>
</body>
</html>
"""#
}
