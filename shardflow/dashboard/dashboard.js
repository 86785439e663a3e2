// The shardflow dashboard: reads the JSON API of `shardflow serve` and redraws every
// two seconds. No framework and no build step; the chart is plain SVG.
"use strict";

const REFRESH_MS = 2000;
const SERIES_KEYS = 5;
const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16"];
const SVG = "http://www.w3.org/2000/svg";
const RANGE_MS = { "15m": 15 * 60_000, "1h": 3_600_000, "6h": 6 * 3_600_000, "24h": 24 * 3_600_000 };

const state = {
  pipelines: [],
  pipeline: null,
  token: null,
  refreshes: 0,
  timer: null,
  busy: false,
};

const $ = (id) => document.getElementById(id);

function tokenFromHash() {
  const match = /(?:^|[#&])token=([^&]+)/.exec(window.location.hash);
  if (match) {
    sessionStorage.setItem("shardflow-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem("shardflow-token");
}

class Unauthorized extends Error {}

async function api(path, params) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of params || []) url.searchParams.append(name, value);
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const response = await fetch(url, { headers });
  if (response.status === 401) throw new Unauthorized("this server needs a token");
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

function element(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatNumber(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value)
    ? value.toLocaleString("en-US")
    : value.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

// Round tick values covering [low, high]: 1, 2 or 5 times a power of ten apart.
function niceTicks(low, high) {
  if (high <= low) high = low + 1;
  const rough = (high - low) / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  const ticks = [];
  for (let v = Math.floor(low / step) * step; v < high + step; v += step) {
    ticks.push(Number(v.toPrecision(12)));
    if (v >= high) break;
  }
  return ticks;
}

function timeOfDay(iso) {
  return iso.slice(11, 19) + "Z";
}

function chosenPipeline() {
  return state.pipelines.find((p) => p.name === $("pipeline").value);
}

function fillPipelines() {
  const select = $("pipeline");
  select.replaceChildren(...state.pipelines.map((p) => element("option", { value: p.name }, p.name)));
  const wanted = new URLSearchParams(window.location.search).get("pipeline");
  select.value = state.pipelines.some((p) => p.name === wanted) ? wanted : state.pipelines[0].name;
  fillAggregates();
}

function fillAggregates() {
  const pipeline = chosenPipeline();
  const select = $("aggregate");
  const numeric = pipeline.aggregates.filter((a) => a.numeric).map((a) => a.name);
  select.replaceChildren(...numeric.map((name) => element("option", { value: name }, name)));
  const wanted = new URLSearchParams(window.location.search).get("aggregate");
  if (numeric.includes(wanted)) select.value = wanted;
}

function typedKeys() {
  return $("keys").value.split(",").map((k) => k.trim()).filter((k) => k.length > 0);
}

async function allWindows(pipeline, keys, since) {
  const windows = [];
  let cursor = null;
  for (let page = 0; page < 20; page += 1) {
    const params = [["since", since], ["limit", "10000"], ...keys.map((k) => ["key", k])];
    if (cursor) params.push(["cursor", cursor]);
    const body = await api(`/api/v1/pipelines/${encodeURIComponent(pipeline)}/windows`, params);
    windows.push(...body.windows);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return windows;
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    const pipeline = chosenPipeline();
    const aggregate = $("aggregate").value;
    const since = $("range").value;
    const status = await api(`/api/v1/pipelines/${encodeURIComponent(pipeline.name)}`);
    let top = null;
    if (pipeline.windows.kind !== "session") {
      top = await api(`/api/v1/pipelines/${encodeURIComponent(pipeline.name)}/top`, [
        ["by", aggregate],
        ["k", "10"],
      ]);
    }
    let keys = typedKeys();
    if (keys.length === 0 && top) keys = top.top.slice(0, SERIES_KEYS).map((row) => row.key);
    let windows = [];
    if (keys.length > 0 || pipeline.windows.kind === "session") {
      windows = await allWindows(pipeline.name, keys, since);
    }
    if (keys.length === 0) {
      keys = [...new Set(windows.map((w) => w.key))].sort().slice(0, SERIES_KEYS);
      windows = windows.filter((w) => keys.includes(w.key));
    }
    drawTop(pipeline, top, aggregate);
    drawChart(pipeline, windows, keys, aggregate);
    drawWindows(windows, aggregate);
    state.refreshes += 1;
    document.body.dataset.refreshes = String(state.refreshes);
    const through = status.final_through === null ? "nothing yet" : status.final_through === "end" ? "every window" : timeOfDay(status.final_through);
    setStatus(
      `${pipeline.name} · ${status.shards} shards · final through ${through} · ` +
        `${windows.length} windows shown · updated ${new Date().toISOString().slice(11, 19)}Z`,
    );
  } catch (error) {
    if (error instanceof Unauthorized) {
      $("token-form").hidden = false;
      stopLive();
    }
    setStatus(`error: ${error.message}`, true);
  } finally {
    state.busy = false;
  }
}

function drawTop(pipeline, top, aggregate) {
  const body = $("top").querySelector("tbody");
  $("top-value-header").textContent = aggregate;
  if (!top) {
    $("top-title").textContent = "top keys";
    body.replaceChildren(emptyRow(4, "session windows are per key: there is no shared window to rank"));
    return;
  }
  if (top.window_start === null) {
    $("top-title").textContent = "top keys of the latest window";
    body.replaceChildren(emptyRow(4, "no windows yet"));
    return;
  }
  const label = top.final ? "final" : "open";
  $("top-title").replaceChildren(
    document.createTextNode(`top keys, ${timeOfDay(top.window_start)}–${timeOfDay(top.window_end)} `),
    element("span", { class: `badge badge-${label}` }, label),
    document.createTextNode(` of ${top.keys.toLocaleString("en-US")} keys`),
  );
  const highest = Math.max(...top.top.map((row) => row.value), 0) || 1;
  body.replaceChildren(
    ...top.top.map((row) => {
      const tr = element("tr", { class: label });
      tr.append(
        element("td", {}, String(row.rank)),
        element("td", { class: "key" }, row.key),
        element("td", { class: "num" }, formatNumber(row.value)),
      );
      const bar = element("td", { class: "bar" });
      bar.append(element("span", { style: `width: ${Math.max(0, (100 * row.value) / highest)}%` }));
      tr.append(bar);
      return tr;
    }),
  );
  if (top.top.length === 0) body.replaceChildren(emptyRow(4, "no key has a value yet"));
}

function emptyRow(columns, text) {
  const tr = element("tr");
  tr.append(element("td", { colspan: String(columns), class: "empty" }, text));
  return tr;
}

function drawChart(pipeline, windows, keys, aggregate) {
  const kind = pipeline.windows;
  const step = kind.kind === "session" ? Infinity : kind.step_ms;
  $("series-title").textContent = `${aggregate} per window`;
  const width = 760;
  const height = 320;
  const margin = { left: 64, right: 16, top: 16, bottom: 56 };
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const points = windows
    .filter((w) => typeof w[aggregate] === "number")
    .map((w) => ({ key: w.key, t: Date.parse(w.window_start), v: w[aggregate], final: w.final, w }));
  if (points.length === 0) {
    chart.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, "no windows in this range yet"));
    $("chart").replaceChildren(chart);
    return;
  }
  // The x axis spans the chosen range up to now (or the data, if it lies elsewhere).
  const rangeMs = RANGE_MS[$("range").value] || 15 * 60_000;
  const now = Date.now();
  let tMin = Math.min(...points.map((p) => p.t));
  let tMax = Math.max(...points.map((p) => p.t));
  if (tMax <= now && tMin >= now - rangeMs - 60_000) {
    tMin = now - rangeMs;
    tMax = now;
  } else if (tMax === tMin) {
    tMin -= 60_000;
    tMax += 60_000;
  }
  const yTicks = niceTicks(Math.min(...points.map((p) => p.v), 0), Math.max(...points.map((p) => p.v), 0));
  const vMin = yTicks[0];
  const vMax = yTicks[yTicks.length - 1];
  const x = (t) => margin.left + ((t - tMin) / Math.max(1, tMax - tMin)) * (width - margin.left - margin.right);
  const y = (v) => height - margin.bottom - ((v - vMin) / (vMax - vMin || 1)) * (height - margin.top - margin.bottom);

  const axis = svg("g", { class: "axis" });
  for (const v of yTicks) {
    axis.append(svg("line", { x1: margin.left, x2: width - margin.right, y1: y(v), y2: y(v) }));
    axis.append(svg("text", { x: margin.left - 6, y: y(v) + 4, "text-anchor": "end" }, formatNumber(v)));
  }
  for (let i = 0; i <= 4; i += 1) {
    const t = tMin + ((tMax - tMin) * i) / 4;
    axis.append(svg("text", { x: x(t), y: height - margin.bottom + 16, "text-anchor": "middle" }, new Date(t).toISOString().slice(11, 16)));
  }
  chart.append(axis);

  const legend = svg("g", { class: "legend" });
  keys.forEach((key, index) => {
    const color = COLORS[index % COLORS.length];
    const series = points.filter((p) => p.key === key).sort((a, b) => a.t - b.t);
    const group = svg("g", { class: "series", "data-key": key });
    if (series.length > 1) {
      // A window with no events has no row: the line breaks there rather than bridge it.
      const d = series
        .map((p, i) => {
          const joined = i > 0 && p.t - series[i - 1].t <= step;
          return `${joined ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
        })
        .join(" ");
      group.append(svg("path", { d, stroke: color }));
    }
    for (const p of series) {
      const circle = svg("circle", {
        cx: x(p.t), cy: y(p.v), r: p.final ? 3.5 : 4.5,
        class: p.final ? "final" : "open",
        fill: p.final ? color : "#fff", stroke: color,
      });
      circle.append(svg("title", {}, `${key} ${timeOfDay(p.w.window_start)} ${aggregate} ${formatNumber(p.v)} (${p.final ? "final" : "open"})`));
      group.append(circle);
    }
    chart.append(group);
    const lx = margin.left + (index % 4) * 170;
    const ly = height - 18 + Math.floor(index / 4) * 14;
    legend.append(svg("rect", { x: lx, y: ly - 9, width: 10, height: 10, fill: color }));
    legend.append(svg("text", { x: lx + 14, y: ly }, key.length > 22 ? `${key.slice(0, 21)}…` : key));
  });
  chart.append(legend);
  $("chart").replaceChildren(chart);
}

function drawWindows(windows, aggregate) {
  $("windows-value-header").textContent = aggregate;
  const latest = [...windows]
    .sort((a, b) => b.window_start.localeCompare(a.window_start) || a.key.localeCompare(b.key))
    .slice(0, 12);
  const body = $("windows").querySelector("tbody");
  if (latest.length === 0) {
    body.replaceChildren(emptyRow(4, "no windows in this range yet"));
    return;
  }
  body.replaceChildren(
    ...latest.map((w) => {
      const label = w.final ? "final" : "open";
      const tr = element("tr", { class: label });
      const badge = element("td");
      badge.append(element("span", { class: `badge badge-${label}` }, label));
      tr.append(
        element("td", { class: "key" }, w.key),
        element("td", {}, `${timeOfDay(w.window_start)}–${timeOfDay(w.window_end)}`),
        badge,
        element("td", { class: "num" }, formatNumber(w[aggregate])),
      );
      return tr;
    }),
  );
}

function startLive() {
  stopLive();
  if ($("live").checked) state.timer = setInterval(refresh, REFRESH_MS);
}

function stopLive() {
  if (state.timer !== null) clearInterval(state.timer);
  state.timer = null;
}

window.addEventListener("hashchange", () => {
  const token = tokenFromHash();
  if (token && token !== state.token) {
    state.token = token;
    $("token-form").hidden = true;
    start();
  }
});

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value;
  sessionStorage.setItem("shardflow-token", state.token);
  $("token-form").hidden = true;
  start();
});

async function start() {
  state.token = tokenFromHash() || state.token;
  try {
    state.pipelines = (await api("/api/v1/pipelines")).pipelines;
  } catch (error) {
    if (error instanceof Unauthorized) $("token-form").hidden = false;
    setStatus(`error: ${error.message}`, true);
    return;
  }
  fillPipelines();
  $("pipeline").onchange = () => { fillAggregates(); refresh(); };
  $("aggregate").onchange = refresh;
  $("range").onchange = refresh;
  $("keys").onchange = refresh;
  $("live").onchange = startLive;
  await refresh();
  startLive();
}

start();
