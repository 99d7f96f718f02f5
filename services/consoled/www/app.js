// bursar console: talks to /api/v1 with the bearer token kept in localStorage.
// Uploads a bundle as raw bytes, lists bundles with a Train button, polls the
// jobs every second (state, progress, loss, tokens/s, ETA, reason, estimate)
// and shows the bill of a selected job. Operators also see the Nodes panel
// (class with its rate, devices, slots in use, speed, efficiency, memory,
// state), refreshed when it opens and every 10 s while it is visible. Every
// value from the server goes into the page through textContent, never
// innerHTML.
"use strict";

const TOKEN_KEY = "bursar.token";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
let selectedJob = null;
let pollTimer = null;
let nodesTimer = null;
let isOperator = false;
const NODES_POLL_MS = 10000;

const $ = (id) => document.getElementById(id);

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

// fetch with the token; resolves to {ok, status, data} where data is the
// parsed JSON (or null) and rejects only on network errors.
async function api(method, path, body, contentType) {
  const headers = { Authorization: "Bearer " + token() };
  if (contentType) headers["Content-Type"] = contentType;
  const resp = await fetch(path, { method, headers, body });
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    data = null;
  }
  return { ok: resp.ok, status: resp.status, data };
}

function errorText(r) {
  return (r.data && r.data.error) || "request failed with status " + r.status;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function say(id, text, isError) {
  const e = $(id);
  e.textContent = text || "";
  e.className = isError ? "error" : "muted";
}

function bytes(n) {
  if (n === undefined || n === null) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function count(n) {
  if (n === undefined || n === null) return "";
  if (n >= 1e9) return (n / 1e9).toFixed(2) + "B";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
  return String(n);
}

function duration(s) {
  if (s === undefined || s === null || !isFinite(s) || s < 0) return "";
  s = Math.round(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
}

function money(x) {
  return x === undefined || x === null ? "" : "$" + Number(x).toFixed(4);
}

function when(us) {
  return us ? new Date(us / 1000).toLocaleString() : "";
}

// A bundle name from a file name: "my model.tar.gz" -> "my-model".
function nameFromFile(f) {
  let n = f.replace(/\.(tar\.gz|tar\.zst|tgz|tar|zst|gz)$/i, "");
  n = n.replace(/[^A-Za-z0-9_.-]+/g, "-").replace(/^[.-]+/, "").slice(0, 64);
  return n || "bundle";
}

async function signIn(ev) {
  if (ev) ev.preventDefault();
  const t = $("token").value.trim();
  if (t) localStorage.setItem(TOKEN_KEY, t);
  await refreshAll();
}

async function refreshAll() {
  if (!token()) {
    say("whoami", "enter your token to sign in", false);
    return;
  }
  try {
    const r = await api("GET", "/api/v1/whoami");
    if (!r.ok) {
      say("whoami", errorText(r), true);
      showNodes(false);
      return;
    }
    say("whoami", r.data.user + " @ " + r.data.tenant + (r.data.role === "operator" ? " (operator)" : ""));
    showNodes(r.data.role === "operator");
    await loadBundles();
    await loadJobs();
    if (!pollTimer) pollTimer = setInterval(loadJobs, 1000);
  } catch (e) {
    say("whoami", "cannot reach the console: " + e.message, true);
  }
}

async function upload(ev) {
  ev.preventDefault();
  const f = $("file").files[0];
  if (!f) {
    say("upload-msg", "choose a bundle file first", true);
    return;
  }
  const name = $("bundle-name").value.trim() || nameFromFile(f.name);
  $("upload").disabled = true;
  say("upload-msg", "uploading " + f.name + " (" + bytes(f.size) + ")...");
  try {
    const r = await api("POST", "/api/v1/bundles?name=" + encodeURIComponent(name), f,
                        "application/octet-stream");
    if (!r.ok) {
      say("upload-msg", "upload failed: " + errorText(r), true);
    } else {
      say("upload-msg", "uploaded " + r.data.name + " as " + r.data.id + " (" + r.data.files +
          " files, " + bytes(r.data.data_bytes) + " of text)");
      $("upload-msg").className = "ok";
      $("file").value = "";
      $("bundle-name").value = "";
      await loadBundles();
    }
  } catch (e) {
    say("upload-msg", "upload failed: " + e.message, true);
  } finally {
    $("upload").disabled = false;
  }
}

async function loadBundles() {
  const r = await api("GET", "/api/v1/bundles");
  const tb = $("bundles").tBodies[0];
  if (!r.ok) {
    say("bundles-msg", errorText(r), true);
    return;
  }
  tb.replaceChildren();
  for (const b of r.data.bundles) {
    const tr = el("tr");
    tr.dataset.id = b.id;
    const m = b.model || {};
    tr.append(el("td", b.name), el("td", b.id, "muted"),
              el("td", m.model_type + " " + m.n_layer + "L/" + m.n_embd + "d"),
              el("td", count(m.n_params), "num"), el("td", bytes(b.data_bytes), "num"),
              el("td", b.params ? b.params.steps : "", "num"), el("td", when(b.created_us)));
    const td = el("td");
    const btn = el("button", "Train");
    btn.addEventListener("click", () => train(b, btn));
    td.append(btn);
    tr.append(td);
    tb.append(tr);
  }
  say("bundles-msg", r.data.bundles.length ? "" : "no bundles yet: upload one above");
}

async function train(b, btn) {
  btn.disabled = true;
  try {
    const r = await api("POST", "/api/v1/jobs", JSON.stringify({ bundle: b.id }),
                        "application/json");
    if (!r.ok) say("jobs-msg", "cannot submit " + b.name + ": " + errorText(r), true);
    else say("jobs-msg", "submitted " + r.data.id + " (" + r.data.state + ")");
    await loadJobs();
  } catch (e) {
    say("jobs-msg", "cannot submit " + b.name + ": " + e.message, true);
  } finally {
    btn.disabled = false;
  }
}

function progressCell(p) {
  const td = el("td");
  const bar = el("div", null, "bar");
  const fill = el("div");
  const frac = p && p.steps ? Math.min(1, p.step / p.steps) : 0;
  fill.style.width = (100 * frac).toFixed(1) + "%";
  bar.title = (100 * frac).toFixed(1) + "%";
  bar.append(fill);
  td.append(bar);
  return td;
}

function estimateText(e) {
  if (!e) return "";
  // the node class when it is not the plain one ("2 ranks on h100")
  const cls = e.node_class && e.node_class !== "cpu" ? " on " + e.node_class : "";
  return money(e.amount) + " · " + e.ranks + " rank" + (e.ranks === 1 ? "" : "s") + cls + " · " +
    duration(e.seconds);
}

async function loadJobs() {
  let r;
  try {
    r = await api("GET", "/api/v1/jobs");
  } catch (e) {
    say("jobs-msg", "cannot reach the console: " + e.message, true);
    return;
  }
  if (!r.ok) {
    say("jobs-msg", errorText(r), true);
    return;
  }
  const tb = $("jobs").tBodies[0];
  tb.replaceChildren();
  for (const j of r.data.jobs) {
    const p = j.progress || {};
    const tr = el("tr");
    tr.dataset.id = j.id;
    if (j.id === selectedJob) tr.className = "selected";
    tr.append(el("td", j.id, "muted"), el("td", j.name),
              el("td", j.state, "state state-" + j.state), progressCell(p),
              el("td", p.steps ? p.step + "/" + p.steps : "", "num"),
              el("td", p.loss !== undefined && p.loss !== null ? Number(p.loss).toFixed(3) : "", "num"),
              el("td", p.tokens_per_s ? count(Math.round(p.tokens_per_s)) : "", "num"),
              el("td", TERMINAL.has(j.state) ? "" : duration(p.eta_s), "num"),
              el("td", estimateText(j.estimate)), el("td", j.error || j.reason || "", j.error ? "error" : "muted"));
    const td = el("td");
    const bill = el("button", "Bill", "secondary");
    bill.addEventListener("click", () => { selectedJob = j.id; loadBill(); loadJobs(); });
    td.append(bill);
    if (!TERMINAL.has(j.state)) {
      const c = el("button", "Cancel", "secondary");
      c.addEventListener("click", () => cancel(j.id));
      td.append(" ", c);
    }
    tr.append(td);
    tb.append(tr);
  }
  if (!r.data.jobs.length) say("jobs-msg", "no jobs yet: press Train on a bundle");
  else if ($("jobs-msg").className !== "error") say("jobs-msg", "");
  if (selectedJob) loadBill();
}

async function cancel(id) {
  const r = await api("POST", "/api/v1/jobs/" + encodeURIComponent(id) + "/cancel");
  say("jobs-msg", r.ok ? "cancelled " + id : "cannot cancel " + id + ": " + errorText(r), !r.ok);
  await loadJobs();
}

function summary(label, value, sub) {
  const d = el("div");
  d.append(el("span", label, "muted"), el("b", value), el("span", sub || "", "muted"));
  return d;
}

async function loadBill() {
  const id = selectedJob;
  $("bill-section").hidden = false;
  $("bill-job").textContent = id;
  const r = await api("GET", "/api/v1/jobs/" + encodeURIComponent(id) + "/bill");
  const tb = $("bill-items").tBodies[0];
  const s = $("bill-summary");
  if (id !== selectedJob) return;
  if (!r.ok) {
    s.replaceChildren();
    tb.replaceChildren();
    say("bill-msg", errorText(r), true);
    return;
  }
  const b = r.data;
  const pred = b.predicted;
  const met = b.metered || {};
  s.replaceChildren(
    summary("predicted", pred ? money(pred.amount) : "none",
            pred ? pred.ranks + " ranks · " + duration(pred.seconds) : ""),
    summary("metered", money(met.amount), (met.rank_seconds || 0).toFixed(1) + " rank-s · " +
            (met.entries || 0) + " entries"),
    summary("difference", b.delta_pct === undefined || b.delta_pct === null ? "" :
            (b.delta_pct > 0 ? "+" : "") + Number(b.delta_pct).toFixed(1) + "% vs predicted",
            b.currency || ""));
  tb.replaceChildren();
  for (const li of b.line_items || []) {
    const tr = el("tr");
    tr.append(el("td", li.kind), el("td", Number(li.quantity).toFixed(2), "num"),
              el("td", li.unit), el("td", money(li.amount), "num"));
    tb.append(tr);
  }
  // where it ran (when not just plain CPUs) and the energy it drew
  const classes = b.classes || [];
  if (classes.length > 1 || (classes.length === 1 && classes[0].node_class !== "cpu"))
    for (const c of classes) {
      const tr = el("tr");
      tr.append(el("td", "on " + c.node_class), el("td", Number(c.rank_seconds).toFixed(2), "num"),
                el("td", "rank_s"), el("td", money(c.amount), "num"));
      tb.append(tr);
    }
  if (met.energy_kwh > 0) {
    const tr = el("tr");
    tr.append(el("td", "energy (included)"), el("td", Number(met.energy_kwh).toFixed(4), "num"),
              el("td", "kWh"), el("td", money((b.energy || {}).amount || 0), "num"));
    tb.append(tr);
  }
  say("bill-msg", (b.line_items || []).length ? "" : "no metered entries yet");
}

// Speed per slot in TFLOP/s, 3 significant digits ("989", "12.0", "0.0512").
function tflops(f) {
  const t = Number(f) / 1e12;
  if (!(t > 0) || !isFinite(t)) return "";
  const dec = Math.min(9, Math.max(0, 2 - Math.floor(Math.log10(t))));
  return t.toFixed(dec);
}

function nodeDevice(n) {
  if (n.device !== "cuda") return n.device || "cpu";
  const g = n.gpus || [];
  return g.length && g[0].name ? g.length + "x " + g[0].name : "cuda (GPUs not reported yet)";
}

function nodeState(n) {
  if (n.down) return "down";
  if (n.reprobe_pending || n.probed_us === null || n.probed_us === undefined) return "probing";
  return "up";
}

function ago(us) {
  if (!us) return "";
  return duration(Math.max(0, Date.now() / 1000 - us / 1e6)) + " ago";
}

// Shows or hides the operator's Nodes panel; polls it only while visible.
function showNodes(op) {
  isOperator = op;
  $("nodes-section").hidden = !op;
  if (nodesTimer) clearInterval(nodesTimer);
  nodesTimer = null;
  if (!op) {
    $("nodes").tBodies[0].replaceChildren();
    $("nodes-totals").textContent = "";
    return;
  }
  loadNodes();
  nodesTimer = setInterval(() => {
    if (!document.hidden) loadNodes();
  }, NODES_POLL_MS);
}

// The class's price per rank-hour from /api/v1/rates ("" when it has none).
function classRate(rates, cls) {
  const c = rates && rates.classes ? rates.classes[cls] : null;
  const h = c && typeof c === "object" ? c.rank_hour : c;
  return h === undefined || h === null ? "" : money(h) + "/rank-h";
}

async function loadNodes() {
  if (!isOperator) return;
  let r, rates;
  try {
    [r, rates] = await Promise.all([api("GET", "/api/v1/nodes"), api("GET", "/api/v1/rates")]);
  } catch (e) {
    say("nodes-msg", "cannot reach the console: " + e.message, true);
    return;
  }
  if (!isOperator) return;
  if (!r.ok) {
    say("nodes-msg", errorText(r), true);
    return;
  }
  const tb = $("nodes").tBodies[0];
  const totals = new Map();
  tb.replaceChildren();
  for (const n of r.data.nodes) {
    const st = nodeState(n);
    const tr = el("tr");
    tr.dataset.id = n.id;
    const eff = Number(n.efficiency).toFixed(2) + (n.efficiency_jobs > 0 ?
      " (" + n.efficiency_jobs + " job" + (n.efficiency_jobs === 1 ? "" : "s") + ")" : " (no jobs yet)");
    tr.append(el("td", n.id), el("td", n.class),
              el("td", rates.ok ? classRate(rates.data, n.class) || "no rate" : "", "muted"),
              el("td", nodeDevice(n)), el("td", n.used + "/" + n.slots, "num"),
              el("td", tflops(n.flops_per_slot), "num"), el("td", eff, "num"),
              el("td", bytes(n.mem_bytes), "num"), el("td", st, "state node-" + st),
              el("td", ago(n.last_seen_us), "muted"));
    const td = el("td");
    const btn = el("button", "Re-measure", "secondary");
    btn.disabled = st === "probing";
    btn.addEventListener("click", () => reprobe(n.id, btn));
    td.append(btn);
    tr.append(td);
    tb.append(tr);
    const t = totals.get(n.class) || { slots: 0, used: 0, gpu: n.device === "cuda" };
    t.slots += n.slots;
    t.used += n.used;
    totals.set(n.class, t);
  }
  $("nodes-totals").textContent = [...totals].map(([c, t]) =>
    c + ": " + t.slots + (t.gpu ? " GPU" : "") + " slots, " + t.used + " in use").join("; ");
  if (!r.data.nodes.length) say("nodes-msg", "no nodes have registered yet");
  else if (!rates.ok) say("nodes-msg", "rates unavailable: " + errorText(rates), true);
  else say("nodes-msg", "");
}

async function reprobe(id, btn) {
  btn.disabled = true;
  let msg, bad;
  try {
    const r = await api("POST", "/api/v1/nodes/" + encodeURIComponent(id) + "/reprobe");
    bad = !r.ok;
    msg = r.ok ? "node " + id + " will measure itself again at its next heartbeat"
               : "cannot re-measure " + id + ": " + errorText(r);
  } catch (e) {
    bad = true;
    msg = "cannot re-measure " + id + ": " + e.message;
  }
  await loadNodes();
  say("nodes-msg", msg, bad);
}

$("token").value = token();
$("nodes-refresh").addEventListener("click", loadNodes);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && isOperator) loadNodes();
});
$("token-form").addEventListener("submit", signIn);
$("upload-form").addEventListener("submit", upload);
$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (f && !$("bundle-name").value) $("bundle-name").placeholder = nameFromFile(f.name);
});
refreshAll();
