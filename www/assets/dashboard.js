// Monitoring dashboard: polls /api/data and /healthz, renders the stack's state,
// hands over to the maintenance page when the API is gone (only once that page loads:
// when the site does not answer at all it stays and says so), reloads once when a new
// static build is deployed, and registers the last-resort service worker (/sw.js).
// Plain ES module, no dependencies.

const body = document.body;
const REFRESH_MS = Math.max(250, parseInt(body.dataset.refreshMs, 10) || 2000);
// Longer than HAProxy's `timeout queue` (2 s) plus the answer itself: under a crowd a request
// waits in HAProxy's queue, and an answer that does arrive must not count as an outage.
const TIMEOUT_MS = 3000;
const HISTORY_MS = 5 * 60 * 1000;
// The latest /api/data, kept for the maintenance page (www/maintenance.html reads this key).
const LAST_KNOWN_KEY = "lastKnownState";
// Builds this tab already reloaded for; a list, so A -> B -> A -> B cannot loop either.
const RELOADED_KEY = "dashboardReloadedBuilds";
const SVG_NS = "http://www.w3.org/2000/svg";
// While the site does not answer at all: the maintenance page's rule, 5 s ± 20 % per tab.
const LOST_INTERVAL_MS = 5000;
const LOST_JITTER = 0.2;

const $ = (id) => document.getElementById(id);

// The maintenance page's reload-loop guard counts a bounce only when the site itself sent
// the tab there a moment before (see maintenance.html): the dashboard marks its own
// automatic navigations, and clears a mark it finds, so a page the user opens from here by
// hand starts afresh.
const markAutomaticNavigation = (mark) => {
  try {
    if (mark) sessionStorage.setItem("siteLeftAt", String(Date.now()));
    else sessionStorage.removeItem("siteLeftAt");
  } catch {
    // Storage refused (private mode): the guard then starts afresh on each page.
  }
};
markAutomaticNavigation(false);

const state = {
  firstBuild: null,
  failures: 0,
  leaving: false,
  counters: null, // { t, byBackend: Map(name -> { req, e5 }) } from the previous answer
  history: [], // { t, load, rates: { [backend]: { req, e5 } } }
  lastOkAt: null,
  lostSince: null, // when the site stopped answering at all (no HTTP answer), else null
};

// ---------------------------------------------------------------- formatting

function fmtDuration(totalSeconds) {
  let s = Math.max(0, Math.floor(totalSeconds));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} m`;
  if (m) return `${m} m ${s} s`;
  return `${s} s`;
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function fmtRate(v) {
  if (v == null || !Number.isFinite(v)) return "—";
  if (v === 0) return "0";
  if (v < 10) return v.toFixed(1);
  return Math.round(v).toLocaleString("en-US");
}

const fmtAxis = (v) => String(Number(v.toPrecision(3)));
const fmtInt = (v) => (Number.isFinite(v) ? v.toLocaleString("en-US") : "—");
const fmtClock = (t) => new Date(t).toLocaleTimeString("en-GB", { hour12: false });

/** Maps HAProxy's state string (e.g. "UP", "DOWN 1/2", "MAINT (via x)") to a look. */
function stateLook(raw) {
  const s = String(raw || "").toUpperCase();
  // "UP 1/3" is UP but failing checks, "DOWN 1/2" is DOWN but recovering.
  const moving = /\d+\/\d+/.test(s);
  if (s.startsWith("UP")) return { cls: moving ? "st-warn" : "st-up", icon: "●" };
  if (s.startsWith("DOWN")) return { cls: moving ? "st-warn" : "st-down", icon: "▲" };
  if (s.startsWith("MAINT")) return { cls: "st-maint", icon: "◆" };
  if (s.startsWith("DRAIN") || s.startsWith("NOLB")) return { cls: "st-warn", icon: "◐" };
  return { cls: "st-none", icon: "■" };
}

function setBadge(el, raw) {
  const look = stateLook(raw);
  el.className = `badge ${look.cls}`;
  el.replaceChildren();
  const icon = document.createElement("span");
  icon.setAttribute("aria-hidden", "true");
  icon.textContent = look.icon;
  el.append(icon, ` ${raw || "unknown"}`);
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

// ---------------------------------------------------------------- network

/** fetch with no-store and a hard timeout; throws on network error or timeout. */
async function request(url) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  try {
    const res = await fetch(url, {
      cache: "no-store",
      signal: ctl.signal,
      headers: { Accept: "application/json" },
    });
    const text = await res.text(); // still under the timeout: a stalled body is a failure too
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON (e.g. an HTML error page): the status code decides
    }
    return { status: res.status, ok: res.ok, json };
  } finally {
    clearTimeout(timer);
  }
}

/** Same path and query (minus any cache-buster `v`), so recovery lands on the same view. */
function maintenanceUrl() {
  const params = new URLSearchParams(location.search);
  params.delete("v");
  const query = params.toString();
  const back = location.pathname + (query ? `?${query}` : "");
  return `/maintenance.html?return=${encodeURIComponent(back)}`;
}

/**
 * Leaves for the maintenance page, but only for one that will load: a navigation that gets
 * no answer ends on the browser's own error page, which nothing brings back. So first fetch
 * the page (no-store); with no answer at all the dashboard stays and says the site is lost.
 */
async function goToMaintenance() {
  if (state.leaving) return;
  let answered = false;
  try {
    answered = (await request("/maintenance.html")).ok;
  } catch {
    // no HTTP answer: HAProxy down or restarting, or the network between us is gone
  }
  if (state.leaving) return;
  if (!answered) return connectionLost();
  state.leaving = true;
  markAutomaticNavigation(true);
  location.replace(maintenanceUrl());
}

function connectionLost() {
  if (state.lostSince === null) state.lostSince = Date.now();
  body.dataset.connection = "lost";
  const text = `Connection to the site lost since ${fmtClock(state.lostSince)}; retrying every 5 s`;
  markStale(`connection to the site lost since ${fmtClock(state.lostSince)}`);
  setText($("summary"), text);
  $("summary").dataset.level = "down";
}

/** The wait before the next refresh: the dashboard's pace, or 5 s ± 20 % while lost. */
function nextDelay() {
  if (state.lostSince === null) return REFRESH_MS;
  return LOST_INTERVAL_MS * (1 + LOST_JITTER * (2 * Math.random() - 1));
}

/**
 * Registers the last-resort worker, versioned by the static build so that a new build
 * copies the maintenance page afresh, and checks for a new script at every load (that is
 * how the kill switch, www/sw-kill.js, reaches this browser).
 */
function registerLastResort(build) {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker
    .register(`/sw.js?v=${encodeURIComponent(build)}`, { scope: "/" })
    .then((registration) => registration.update())
    .catch(() => {}); // no worker (private mode, old browser): HAProxy's page still works
}

async function pollData() {
  let r;
  try {
    r = await request("/api/data");
  } catch (err) {
    state.failures += 1;
    // One blip only marks the data stale; two in a row mean the API is gone.
    if (state.failures >= 2) return goToMaintenance();
    return markStale(err && err.name === "AbortError" ? "request timed out after 3 s" : "network error");
  }
  if ((r.json && r.json.status === "maintenance") || r.status >= 500) return goToMaintenance();
  if (!r.ok || !r.json || typeof r.json !== "object") {
    // 4xx or garbage: not an outage the maintenance page could recover from.
    state.failures = 0;
    return markStale(`unexpected answer (HTTP ${r.status})`);
  }
  state.failures = 0;
  state.lostSince = null;
  delete body.dataset.connection;
  render(r.json);
}

async function pollHealth() {
  let r;
  try {
    r = await request("/healthz");
  } catch {
    return;
  }
  if (r.status !== 200 || !r.json || typeof r.json.build !== "string") return;
  const build = r.json.build;
  if (state.firstBuild === null) {
    state.firstBuild = build;
    body.dataset.build = build;
    setText($("build"), build);
    registerLastResort(build);
    return;
  }
  if (build !== state.firstBuild) reloadForBuild(build);
}

function reloadForBuild(build) {
  if (state.leaving) return;
  let done;
  try {
    done = JSON.parse(sessionStorage.getItem(RELOADED_KEY) || "[]");
    if (!Array.isArray(done)) done = [];
    if (done.includes(build)) {
      setText($("build"), `${state.firstBuild} (server: ${build})`);
      return;
    }
    done.push(build);
    sessionStorage.setItem(RELOADED_KEY, JSON.stringify(done.slice(-20)));
  } catch {
    return; // without storage there is no loop guard, so no automatic reload
  }
  state.leaving = true;
  markAutomaticNavigation(true);
  const url = new URL(location.href);
  url.searchParams.set("v", String(Date.now()));
  location.replace(url.href);
}

// ---------------------------------------------------------------- rendering

function markStale(reason) {
  setText($("data-status"), "stale");
  $("data-status").className = "pill is-stale";
  body.classList.add("is-stale");
  const note = $("stale-note");
  const since = state.lastOkAt ? `; showing data from ${fmtClock(state.lastOkAt)}` : "";
  setText(note, `Stale: ${reason}${since}`);
  note.hidden = false;
  if (!state.lastOkAt) {
    setText($("summary"), `No data yet: ${reason}`);
    $("summary").dataset.level = "degraded";
  }
  pushHistory({ t: Date.now(), load: null, rates: {} });
  drawCharts();
}

function computeRates(data) {
  const t = Number.isFinite(data.generated_at_ms) ? data.generated_at_ms : Date.now();
  const byBackend = new Map();
  for (const b of (data.haproxy && data.haproxy.backends) || []) {
    byBackend.set(b.name, { req: b.total_requests, e5: b.http_5xx });
  }
  const rates = {};
  const prev = state.counters;
  if (prev && t > prev.t) {
    const dt = (t - prev.t) / 1000;
    for (const [name, cur] of byBackend) {
      const old = prev.byBackend.get(name);
      if (!old) continue;
      const dReq = cur.req - old.req;
      const d5xx = cur.e5 - old.e5;
      if (dReq < 0 || d5xx < 0) continue; // counters reset (HAProxy restarted)
      rates[name] = { req: dReq / dt, e5: d5xx / dt };
    }
  }
  state.counters = { t, byBackend };
  return rates;
}

function pushHistory(sample) {
  state.history.push(sample);
  const cutoff = sample.t - HISTORY_MS;
  while (state.history.length && state.history[0].t < cutoff) state.history.shift();
}

/** Which server each backend is sending traffic to: first UP active, else first UP backup. */
function servingServers(servers) {
  const serving = new Map();
  for (const backup of [false, true]) {
    for (const s of servers) {
      if (!!s.backup !== backup || serving.has(s.backend)) continue;
      if (isAvailable(s.state)) serving.set(s.backend, s.server);
    }
  }
  return serving;
}

// HAProxy reports an unchecked server as "no check" and routes to it as if it were up. Ours
// are all checked (the fallbacks by their liveness check); an older haproxy.cfg had them so.
function isAvailable(state) {
  const upper = String(state).toUpperCase();
  return upper.startsWith("UP") || upper === "NO CHECK";
}

function summaryLevel(hap) {
  if (!hap.reachable) return "down";
  const servers = hap.servers || [];
  const serving = servingServers(servers);
  const backends = new Set(servers.map((s) => s.backend));
  if ([...backends].some((b) => !serving.has(b))) return "down";
  return servers.every((s) => isAvailable(s.state)) ? "ok" : "degraded";
}

function summarize(hap) {
  if (!hap.reachable) return "HAProxy unreachable: server states unknown";
  const servers = hap.servers || [];
  const serving = servingServers(servers);
  const notUp = servers.filter((s) => !isAvailable(s.state));
  const head = notUp.length
    ? `${notUp.length} of ${servers.length} servers not UP (${notUp.map((s) => `${s.server} ${s.state}`).join(", ")})`
    : `All ${servers.length} servers available`;
  const backends = [...new Set(servers.map((s) => s.backend))];
  const routes = backends.map((b) => `${b} → ${serving.get(b) || "nothing"}`).join(", ");
  return `${head} · ${routes}`;
}

function cell(tr, i, label) {
  let td = tr.children[i];
  if (!td) {
    td = document.createElement("td");
    td.setAttribute("role", "cell"); // the phone layout restyles the table; keep its semantics
    td.dataset.label = label;
    tr.append(td);
  }
  return td;
}

/** Updates rows in place, keyed by `key`, so element references (and tests) stay valid. */
function syncRows(tbody, items, key, attr, fill) {
  const existing = new Map([...tbody.children].map((tr) => [tr.dataset[attr], tr]));
  const keep = new Set();
  items.forEach((item, index) => {
    const k = key(item);
    keep.add(k);
    let tr = existing.get(k);
    if (!tr) {
      tr = document.createElement("tr");
      tr.setAttribute("role", "row");
      tr.dataset[attr] = k;
    }
    if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
    fill(tr, item);
  });
  for (const [k, tr] of existing) if (!keep.has(k)) tr.remove();
}

function renderServers(servers) {
  const serving = servingServers(servers);
  syncRows($("servers"), servers, (s) => s.server, "server", (tr, s) => {
    const raw = String(s.state ?? "");
    if (tr.dataset.state !== raw) tr.dataset.state = raw;
    tr.className = `row ${stateLook(raw).cls}`;

    const name = cell(tr, 0, "Server");
    name.replaceChildren();
    const strong = document.createElement("span");
    strong.className = "name";
    strong.textContent = s.server;
    name.append(strong);
    if (s.backup) name.append(tag("backup", "tag"));
    if (serving.get(s.backend) === s.server) name.append(tag("serving", "tag tag-serving"));

    setText(cell(tr, 1, "Backend"), s.backend);
    const badgeCell = cell(tr, 2, "State");
    let badge = badgeCell.firstElementChild;
    if (!badge) {
      badge = document.createElement("span");
      badgeCell.append(badge);
    }
    setBadge(badge, raw);
    setText(cell(tr, 3, "Since"), s.since_s == null ? "—" : `for ${fmtDuration(s.since_s)}`);
    const check = s.check_status
      ? `${s.check_status}${s.check_duration_ms == null ? "" : ` in ${s.check_duration_ms} ms`}`
      : "no check";
    setText(cell(tr, 4, "Last check"), check);
    const sess = cell(tr, 5, "Sessions");
    sess.className = "num";
    setText(sess, fmtInt(s.sessions));
    const total = cell(tr, 6, "Total");
    total.className = "num muted";
    setText(total, fmtInt(s.total_sessions));
    const e5 = cell(tr, 7, "5xx");
    e5.className = s.http_5xx > 0 ? "num warn-text" : "num muted";
    setText(e5, fmtInt(s.http_5xx));
  });
}

function tag(text, cls) {
  const t = document.createElement("span");
  t.className = cls;
  t.textContent = text;
  return t;
}

/**
 * Across hosts: one line per load balancer, its own view of every server, the one that
 * forwarded this data marked as the VIP's holder. Hidden on a single entry point.
 */
function renderBalancers(balancers) {
  const list = Array.isArray(balancers) ? balancers : [];
  $("balancers-card").hidden = list.length === 0;
  $("balancers").replaceChildren(
    ...list.map((b) => {
      const li = document.createElement("li");
      li.dataset.balancer = String(b.name ?? "");
      li.dataset.reachable = b.reachable ? "true" : "false";
      if (b.forwarded) li.dataset.vip = "true";
      li.append(tag(String(b.name ?? "?"), "name"));
      if (b.forwarded) li.append(tag("holds the VIP", "tag tag-serving"));
      const views = (b.servers || []).map((s) => `${s.server} ${s.state}`).join(" · ");
      const detail = b.reachable ? views : `unreachable: ${b.error || "its stats did not answer"}`;
      li.append(tag(detail, "muted"));
      return li;
    }),
  );
}

function renderBackends(backends, rates) {
  syncRows($("backends"), backends, (b) => b.name, "backend", (tr, b) => {
    const rate = rates[b.name];
    const name = cell(tr, 0, "Backend");
    name.className = "name";
    setText(name, b.name);
    const badgeCell = cell(tr, 1, "State");
    let badge = badgeCell.firstElementChild;
    if (!badge) {
      badge = document.createElement("span");
      badgeCell.append(badge);
    }
    setBadge(badge, b.state);
    const sess = cell(tr, 2, "Sessions");
    sess.className = "num";
    setText(sess, fmtInt(b.sessions));
    const req = cell(tr, 3, "req/s");
    req.className = "num big";
    setText(req, fmtRate(rate && rate.req));
    const e5 = cell(tr, 4, "5xx/s");
    e5.className = rate && rate.e5 > 0 ? "num big warn-text" : "num big";
    setText(e5, fmtRate(rate && rate.e5));
    const total = cell(tr, 5, "Requests");
    total.className = "num muted";
    setText(total, fmtInt(b.total_requests));
  });
}

function renderHost(host) {
  if (!host) return;
  setText($("hostname"), host.hostname || "");
  const load = Array.isArray(host.load) ? host.load : [];
  ["load-1", "load-5", "load-15"].forEach((id, i) => {
    setText($(id), Number.isFinite(load[i]) ? load[i].toFixed(2) : "—");
  });
  const mem = host.memory;
  if (mem && mem.total_bytes > 0) {
    const used = mem.total_bytes - mem.available_bytes;
    const pct = Math.min(100, Math.max(0, (used / mem.total_bytes) * 100));
    setText($("mem-text"), `${fmtBytes(used)} / ${fmtBytes(mem.total_bytes)}`);
    setText($("mem-pct"), `${Math.round(pct)} %`);
    $("mem-bar").style.width = `${pct.toFixed(1)}%`;
    $("mem-bar").className = `bar-fill${pct > 90 ? " is-high" : ""}`;
  }
  setText($("uptime"), Number.isFinite(host.uptime_s) ? fmtDuration(host.uptime_s) : "—");
}

function render(data) {
  const hap = data.haproxy || { reachable: false, error: "The API answer had no HAProxy section." };
  const rates = computeRates(data);
  state.lastOkAt = Date.now();

  setText($("data-status"), "ok");
  $("data-status").className = "pill is-ok";
  body.classList.remove("is-stale");
  $("stale-note").hidden = true;

  setText($("summary"), summarize(hap));
  $("summary").dataset.level = summaryLevel(hap);
  body.dataset.haproxy = hap.reachable ? "reachable" : "unreachable";

  const unreachable = !hap.reachable;
  $("haproxy-error").hidden = !unreachable;
  $("server-table").hidden = unreachable;
  $("backend-table").hidden = unreachable;
  $("backends-empty").hidden = !unreachable;
  if (unreachable) {
    setText($("haproxy-error-text"), hap.error || "HAProxy's stats socket did not answer.");
    // No rows rather than last-known rows: nothing on screen may claim a state we do not know.
    renderServers([]);
    renderBackends([], rates);
  } else {
    renderServers(hap.servers || []);
    renderBackends(hap.backends || [], rates);
  }
  renderHost(data.host);
  renderBalancers(data.balancers);

  setText($("api-build"), data.build || "—");
  const updated = $("updated");
  updated.dateTime = new Date(state.lastOkAt).toISOString();
  setText(updated, fmtClock(state.lastOkAt));

  const load = data.host && Array.isArray(data.host.load) ? data.host.load[0] : null;
  pushHistory({ t: state.lastOkAt, load: Number.isFinite(load) ? load : null, rates });
  drawCharts();
  keepLastKnown(data, hap, state.lastOkAt);
}

/**
 * Keeps the latest answer, compactly and with the time it was fetched, in localStorage: the
 * maintenance page shows it during an outage as the last known state, marked with its age.
 */
function keepLastKnown(data, hap, at) {
  const host = data.host || {};
  const snapshot = {
    at,
    host: {
      hostname: host.hostname,
      load: host.load,
      memory: host.memory,
      uptime_s: host.uptime_s,
    },
    servers: hap.reachable
      ? (hap.servers || []).map((s) => ({ backend: s.backend, server: s.server, state: s.state }))
      : [],
  };
  try {
    localStorage.setItem(LAST_KNOWN_KEY, JSON.stringify(snapshot));
  } catch {
    // Storage refused or full: the maintenance page then shows no last known state.
  }
}

// ---------------------------------------------------------------- charts

/** Rounds up to 1, 2 or 5 times a power of ten, so the axis label reads well. */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

const W = 600;
const H = 150;

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

/** Builds the chart skeleton once: svg with grid, one path per series, HTML axis labels. */
function setupChart(figure, series) {
  const plot = document.createElement("div");
  plot.className = "plot";
  const svg = svgEl("svg", {
    viewBox: `0 0 ${W} ${H}`,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": figure.querySelector("figcaption").firstChild.textContent.trim(),
  });
  for (const y of [0, H / 2, H]) {
    svg.append(svgEl("line", { x1: 0, x2: W, y1: y, y2: y, class: "grid", "vector-effect": "non-scaling-stroke" }));
  }
  const paths = series.map((s) => {
    const p = svgEl("path", { class: `line ${s.cls}`, d: "", "vector-effect": "non-scaling-stroke" });
    svg.append(p);
    return p;
  });
  const top = document.createElement("span");
  top.className = "axis axis-top";
  const mid = document.createElement("span");
  mid.className = "axis axis-mid";
  const zero = document.createElement("span");
  zero.className = "axis axis-zero";
  zero.textContent = "0";
  const left = document.createElement("span");
  left.className = "axis axis-left";
  left.textContent = "−5 min";
  const right = document.createElement("span");
  right.className = "axis axis-right";
  right.textContent = "now";
  const empty = document.createElement("span");
  empty.className = "plot-empty";
  empty.textContent = "No data";
  plot.append(svg, top, mid, zero, left, right, empty);
  figure.append(plot);
  return { series, paths, top, mid, empty };
}

let charts = null;

function drawCharts() {
  if (!charts) {
    charts = [
      setupChart($("chart-requests"), [
        { cls: "key-static", get: (s) => rateOf(s, "static", "req") },
        { cls: "key-api", get: (s) => rateOf(s, "api", "req") },
        { cls: "key-5xx", get: (s) => total5xx(s) },
      ]),
      setupChart($("chart-load"), [{ cls: "key-load", get: (s) => s.load }]),
    ];
  }
  const now = Date.now();
  const t0 = now - HISTORY_MS;
  for (const chart of charts) {
    let max = 0;
    let points = 0;
    for (const s of state.history) {
      for (const def of chart.series) {
        const v = def.get(s);
        if (v == null || !Number.isFinite(v)) continue;
        points += 1;
        if (v > max) max = v;
      }
    }
    chart.empty.hidden = points > 0;
    const top = niceCeil(max);
    chart.series.forEach((def, i) => {
      let d = "";
      let penDown = false;
      for (const s of state.history) {
        const v = def.get(s);
        if (v == null || !Number.isFinite(v)) {
          penDown = false;
          continue;
        }
        const x = ((s.t - t0) / HISTORY_MS) * W;
        const y = H - (Math.min(v, top) / top) * H;
        d += `${penDown ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
        penDown = true;
      }
      chart.paths[i].setAttribute("d", d);
    });
    setText(chart.top, fmtAxis(top));
    setText(chart.mid, fmtAxis(top / 2));
  }
}

function rateOf(sample, backend, field) {
  const r = sample.rates[backend];
  return r ? r[field] : null;
}

function total5xx(sample) {
  const names = Object.keys(sample.rates);
  if (!names.length) return null;
  return names.reduce((sum, n) => sum + sample.rates[n].e5, 0);
}

// ---------------------------------------------------------------- main loop

async function tick() {
  if (state.leaving) return;
  const started = performance.now();
  await Promise.all([pollData(), pollHealth()]);
  if (state.leaving) return;
  // Fixed cadence without overlapping requests: wait only what is left of the period.
  setTimeout(tick, Math.max(0, nextDelay() - (performance.now() - started)));
}

drawCharts();
tick();
