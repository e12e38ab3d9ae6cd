// The fleet dashboard: renders each snapshot the gateway streams from /api/events.
"use strict";

const HEALTH_WORDS = { alert: "alert", watch: "watch", ok: "ok", offline: "offline" };
const COLOURS = { ok: "#2f9e62", alert: "#d9423c", accent: "#2d6cdf", raw: "#b3bcc6" };
const KIND_COLOURS = { update: "#2d6cdf", alert: "#d9423c", status: "#7b8794",
                       round: "#9b6bd6", model: "#18a2a8" };
const seenAlerts = new Set();
let snapshots = 0;
let latest = null;    // the last snapshot, to re-render when the operator picks a vehicle
let selected = null;  // the vehicle whose alerts the feed shows, or null for every vehicle

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function text(id, value) { document.getElementById(id).textContent = value; }

function bytes(n) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = Math.abs(n), unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return (n < 0 ? "−" : "") + value.toFixed(unit && value < 100 ? 1 : 0) + " " + units[unit];
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

function vehicleClock(ts) {
  return new Date(ts * 1000).toLocaleString([], {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false });
}

// Plotly reads a few HTML tags in labels; a subsystem is free text from a vehicle.
function label(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// A score and its threshold with as many decimals (1 to 4) as it takes to tell them apart:
// an alert just over its threshold must not read "score 4.0 (threshold 4.0)".
function apart(score, threshold) {
  let digits = 1;
  while (digits < 4 && score.toFixed(digits) === threshold.toFixed(digits)) digits += 1;
  return [score.toFixed(digits), threshold.toFixed(digits)];
}

function count(n) { return Number(n).toLocaleString(); }

function plural(n, word) { return `${count(n)} ${word}${n === 1 ? "" : "s"}`; }

function epsilon(value) { return value === null ? "–" : value.toFixed(value < 10 ? 1 : 0); }

function renderKpis(s) {
  const fleet = s.fleet, health = fleet.health;
  text("kpi-online", `${fleet.online} / ${fleet.vehicles.length}`);
  // By state: a vehicle that alerted and then went away is offline too, whatever its colour.
  text("kpi-fleet", `${fleet.vehicles.length - fleet.online} offline`);
  const attention = health.alert + health.watch;
  text("kpi-attention", String(attention));
  document.getElementById("kpi-attention").classList.toggle("bad", health.alert > 0);
  text("kpi-attention-note", `${health.alert} alert · ${health.watch} watch`);
  const model = s.model;
  text("model-version", model ? `v${model.version}` : "none yet");
  text("model-note", model ? `round ${model.round} · ${model.participants} vehicles · `
    + `${count(Math.round(model.readings))} readings · noise σ ${model.noise_std.toPrecision(2)}`
    : "waiting for a round with quorum");
  const merged = s.rounds.filter((r) => r.quorum_met).length;
  text("kpi-rounds", s.rounds.length ? String(s.rounds[0].round) : "–");
  text("kpi-rounds-note", s.rounds.length
    ? `${merged} of the last ${s.rounds.length} merged` : "no round closed yet");
  const t = s.traffic;
  text("kpi-saved", t.readings ? bytes(t.saved_bytes) : "–");
  text("kpi-saved-note", t.readings
    ? `${(100 * t.saved_fraction).toFixed(1)}% less than ${bytes(t.raw_bytes)} raw`
    : "no readings summarised yet");
  const spent = Object.values(s.privacy.epsilon_spent);
  const exhausted = (s.privacy.exhausted || []).length;
  text("kpi-epsilon", s.privacy.max_epsilon_spent === null
    ? "–" : `max ${epsilon(s.privacy.max_epsilon_spent)}`);
  text("kpi-epsilon-note", !spent.length ? "no update accepted yet"
    : s.privacy.max_epsilon_spent === 0 ? "updates are sent exact (privacy off)"
    : `mean ${epsilon(spent.reduce((a, b) => a + b, 0) / spent.length)} over ${spent.length} vehicles`
      + (exhausted ? ` · ${exhausted} exhausted` : ""));
}

function tile(v, budgets, exhausted) {
  const last = v.last_alert;
  const budget = budgets[v.vehicle_id] || 0;
  const spentAll = exhausted.has(v.vehicle_id);
  const what = last ? `${last.subsystem}${v.alerts > 1 ? " ×" + v.alerts : ""}`
    : (v.state === "online" ? "ok" : v.state);
  const eps = v.epsilon_spent === null ? ""
    : ` · ε ${epsilon(v.epsilon_spent)}${budget ? "/" + epsilon(budget) : ""}${spentAll ? " spent" : ""}`;
  const title = `${v.vehicle_id}: ${HEALTH_WORDS[v.health]}, ${v.state}; ${v.alerts} alert(s)`
    + (last ? `, last on ${last.subsystem} at ${vehicleClock(last.ts)} (vehicle clock)` : "")
    + `; took part in ${v.updates} round(s)`
    + (spentAll ? "; privacy budget exhausted: it no longer sends updates" : "");
  const classes = `tile ${v.health}` + (v.state !== "online" && v.health !== "offline" ? " gone" : "")
    + (v.vehicle_id === selected ? " selected" : "");
  return el("div", { class: classes, title,
                     dataset: { vehicle: v.vehicle_id, health: v.health,
                                exhausted: String(spentAll) } },
    el("div", { class: "id" }, v.vehicle_id),
    el("div", { class: "what" }, what),
    el("div", { class: "meta" }, v.updates ? `${plural(v.updates, "round")}${eps}`
      : "no update yet"));
}

function renderTiles(fleet, privacy) {
  const box = document.getElementById("vehicles");
  if (!fleet.vehicles.length) return;
  const budgets = privacy.epsilon_budget || {};
  const exhausted = new Set(privacy.exhausted || []);
  box.replaceChildren(...fleet.vehicles.map((v) => tile(v, budgets, exhausted)));
}

function renderAlerts(all) {
  const list = document.getElementById("alerts");
  const filter = document.getElementById("alert-filter");
  filter.hidden = selected === null;
  text("alert-filter-vehicle", selected || "");
  const alerts = all.filter((a) => selected === null || a.vehicle_id === selected);
  if (!alerts.length) {
    list.replaceChildren(el("li", { class: "empty" }, selected === null
      ? "No alert yet." : `No recent alert from ${selected}.`));
    return;
  }
  const first = seenAlerts.size === 0;
  list.replaceChildren(...alerts.map((a) => {
    const key = `${a.vehicle_id}|${a.ts}|${a.subsystem}`;
    const fresh = !first && !seenAlerts.has(key);
    seenAlerts.add(key);
    const sensors = a.sensors.map((s) => `${s.name} z=${s.z >= 0 ? "+" : ""}${s.z.toFixed(1)}`);
    return el("li", { class: fresh ? "fresh" : "", dataset: { vehicle: a.vehicle_id,
                                                              subsystem: a.subsystem } },
      el("div", { class: "head" },
        el("span", { class: "vehicle" }, a.vehicle_id),
        el("span", { class: "badge" }, a.subsystem),
        el("span", { class: "time" }, vehicleClock(a.ts))),
      el("div", { class: "sensors" },
        `score ${apart(a.score, a.threshold).join(" (threshold ")}) · ${sensors.join(", ")}`));
  }));
}

function chips(participants) {
  const shown = participants.slice(0, 10).map((p) => el("span", { class: "chip" }, p));
  if (participants.length > 10) {
    shown.push(el("span", { class: "chip more", title: participants.slice(10).join(", ") },
      `+${participants.length - 10} more`));
  }
  return el("div", { class: "chips" }, ...shown);
}

function renderRounds(rounds) {
  const body = document.querySelector("#rounds tbody");
  if (!rounds.length) return;
  body.replaceChildren(...rounds.map((r) => el("tr",
    { class: r.quorum_met ? "" : "failed", dataset: { round: r.round } },
    el("td", {}, String(r.round)),
    el("td", {}, clock(r.closed_at)),
    el("td", {}, String(r.accepted)),
    el("td", {}, String(r.rejected)),
    el("td", {}, r.privacy || "–"),
    el("td", {}, r.quorum_met ? `v${r.model_version}` : `kept v${r.model_version} (no quorum)`),
    el("td", {}, chips(r.participants)))));
}

function renderTraffic(t) {
  const rows = Object.entries(t.by_kind).map(([kind, k]) => el("tr", {},
    el("td", {}, kind), el("td", { class: "num" }, plural(k.messages, "message")),
    el("td", { class: "num" }, bytes(k.payload_bytes))));
  rows.push(el("tr", {}, el("td", {}, "raw streaming"),
    el("td", { class: "num" }, plural(t.readings, "reading")),
    el("td", { class: "num" }, bytes(t.raw_bytes))));
  document.querySelector("#traffic tbody").replaceChildren(...rows);
  document.getElementById("traffic-hint").title =
    `Raw streaming: each reading summarised by an accepted update, sent as one ` +
    `${t.raw_reading_bytes}-byte JSON message. Federation: every payload received from ` +
    `vehicles, each round message and each binary model once per vehicle online (a model ` +
    `goes down only when it changed enough), each JSON model once. Framing is left ` +
    `out of both, so the saving is a lower bound.`;
}

function renderRejections(rejections) {
  const entries = Object.entries(rejections);
  if (!entries.length) return;
  document.querySelector("#rejections tbody").replaceChildren(...entries.map(([reason, n]) =>
    el("tr", {}, el("td", {}, reason), el("td", { class: "num" }, count(n)))));
}

const LAYOUT = {
  margin: { l: 44, r: 10, t: 8, b: 34 }, font: { size: 11, color: "#1d2733" },
  paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
  legend: { orientation: "h", y: 1.14, x: 0 }, bargap: 0.2,
};
const CONFIG = { displayModeBar: false, responsive: true };

function renderCharts(s) {
  if (typeof Plotly === "undefined") return;
  const rounds = [...s.rounds].reverse();
  const x = rounds.map((r) => r.round);
  Plotly.react("chart-rounds", [
    { type: "bar", name: "accepted", x, y: rounds.map((r) => r.accepted),
      marker: { color: COLOURS.ok } },
    { type: "bar", name: "rejected", x, y: rounds.map((r) => r.rejected),
      marker: { color: COLOURS.alert } },
  ], { ...LAYOUT, barmode: "stack", xaxis: { title: { text: "round" } },
       yaxis: { title: { text: "updates" }, rangemode: "tozero" } }, CONFIG);

  const spent = Object.entries(s.privacy.epsilon_spent);
  const budgets = s.privacy.epsilon_budget || {};
  const exhausted = new Set(s.privacy.exhausted || []);
  const withBudget = spent.filter(([v]) => budgets[v] > 0);
  Plotly.react("chart-privacy", [
    { type: "bar", name: "ε spent", x: spent.map(([v]) => v), y: spent.map(([, e]) => e),
      marker: { color: spent.map(([v]) => (exhausted.has(v) ? COLOURS.alert : COLOURS.accent)) },
      hovertemplate: "%{x}: ε %{y:.2f} spent<extra></extra>" },
    { type: "scatter", mode: "markers", name: "budget", x: withBudget.map(([v]) => v),
      y: withBudget.map(([v]) => budgets[v]), visible: withBudget.length ? true : false,
      marker: { symbol: "line-ew", size: 14, line: { width: 3, color: "#1d2733" } },
      hovertemplate: "%{x}: budget ε %{y:.2f}<extra></extra>" },
  ], { ...LAYOUT, showlegend: withBudget.length > 0,
       margin: { ...LAYOUT.margin, b: spent.length <= 30 ? 64 : 20 },
       annotations: s.privacy.max_epsilon_spent === 0 ? [{
         text: "privacy off: updates carry no noise", xref: "paper", yref: "paper", x: 0.5,
         y: 0.6, showarrow: false, font: { color: "#68758a", size: 13 } }] : [],
       yaxis: { title: { text: "ε spent" }, rangemode: "tozero" },
       xaxis: { showticklabels: spent.length <= 30, tickangle: -45 } }, CONFIG);

  const t = s.traffic;
  const labels = ["raw streaming", "federation"];
  const traces = Object.entries(t.by_kind).map(([kind, k]) => ({
    type: "bar", orientation: "h", name: kind, y: ["federation"], x: [k.payload_bytes],
    marker: { color: KIND_COLOURS[kind] || COLOURS.accent },
    hovertemplate: `${kind}: %{x:.3s}B<extra></extra>` }));
  traces.unshift({ type: "bar", orientation: "h", name: "raw readings", y: ["raw streaming"],
    x: [t.raw_bytes], marker: { color: COLOURS.raw },
    hovertemplate: "raw streaming: %{x:.3s}B<extra></extra>" });
  const subsystems = Object.entries(s.fleet.by_subsystem).reverse();
  Plotly.react("chart-subsystems", [
    { type: "bar", orientation: "h", y: subsystems.map(([name]) => label(name)),
      x: subsystems.map(([, n]) => n), marker: { color: COLOURS.alert },
      hovertemplate: "%{y}: %{x} vehicle(s)<extra></extra>" },
  ], { ...LAYOUT, margin: { ...LAYOUT.margin, l: 90, b: 24, t: 4 },
       xaxis: { dtick: 1, rangemode: "tozero" },
       annotations: subsystems.length ? [] : [{ text: "no vehicle has alerted", xref: "paper",
         yref: "paper", x: 0.5, y: 0.5, showarrow: false, font: { color: "#68758a", size: 13 } }],
     }, CONFIG);

  Plotly.react("chart-traffic", traces, { ...LAYOUT, barmode: "stack",
    margin: { ...LAYOUT.margin, l: 100 }, legend: { orientation: "v", x: 1.02, y: 1 },
    xaxis: { title: { text: "bytes" }, tickformat: ".2s" },
    yaxis: { categoryorder: "array", categoryarray: labels } }, CONFIG);
}

function select(vehicle) {
  selected = vehicle === selected ? null : vehicle;
  if (latest) {
    renderTiles(latest.fleet, latest.privacy);
    renderAlerts(latest.alerts);
  }
}

function render(s) {
  latest = s;
  renderKpis(s);
  renderTiles(s.fleet, s.privacy);
  renderAlerts(s.alerts);
  renderRounds(s.rounds);
  renderTraffic(s.traffic);
  renderRejections(s.rejections);
  renderCharts(s);
  snapshots += 1;
  document.body.dataset.snapshots = String(snapshots);
  text("updated-at", `updated ${clock(Date.now() / 1000)}`);
}

function setLive(state, words) {
  document.getElementById("live").dataset.state = state;
  text("live-text", words);
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("snapshot", (event) => {
    try {
      render(JSON.parse(event.data));
    } catch (error) {
      console.error("cannot render a snapshot", error);
    }
  });
  source.onopen = () => setLive("live", "live");
  source.onerror = () => setLive("lost", "reconnecting…");  // EventSource retries by itself
}

document.getElementById("vehicles").addEventListener("click", (event) => {
  const picked = event.target.closest(".tile");
  if (picked) select(picked.dataset.vehicle);
});
document.getElementById("alert-filter").addEventListener("click", () => select(selected));
connect();
