// offpath console: plain JavaScript over the offpath API, no build step and no
// network beyond this server. Every value from the API is written with textContent.
"use strict";

const BASE = location.pathname.replace(/\/console\/?$/, "");
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const view = document.getElementById("view");
const banner = document.getElementById("banner");
let me = null;
let tasks = ["embed", "rank", "classify"];
// Timers and long-polls of the current view; a new view stops them.
let generation = 0;

// ---------- helpers ----------

/** An element: h("a", {href: "#"}, "text", child). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "style") el.style.cssText = value; // CSSOM: allowed by the page's CSP
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces the children of `el` with `nodes`, leaving out the absent ones. */
function fill(el, ...nodes) {
  el.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, value);
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return el;
}

/** An API failure: status, code and the server's sentence. */
class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  describe() {
    if (this.status === 0) return "Cannot reach the offpath server: " + this.message;
    return `${this.status} ${this.code}: ${this.message}`;
  }
}

/** Calls the API; resolves to the parsed body or throws an ApiFailure. */
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const key = sessionStorage.getItem("offpath.key");
  if (key) headers["Authorization"] = "Bearer " + key;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(BASE + path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiFailure(0, "network", err.message || String(err));
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const error = body && body.error;
    throw new ApiFailure(
      response.status,
      error ? error.code : "http_" + response.status,
      error ? error.message : (text.trim().slice(0, 200) || response.statusText || "no answer"),
    );
  }
  return body;
}

function showBanner(kind, text) {
  banner.hidden = false;
  banner.className = kind;
  banner.textContent = text;
}

function clearBanner() {
  banner.hidden = true;
  banner.textContent = "";
}

function failed(err) {
  if (err instanceof ApiFailure) {
    showBanner("error", err.describe());
    if (err.status === 401) openKeyForm();
  } else {
    showBanner("error", "Unexpected error: " + err);
  }
}

function chip(status) {
  return h("span", { class: "chip " + status }, status);
}

/** A job id's creation-time prefix and random tail (UUIDv7 ids share their prefix). */
function shortId(id) {
  return id ? id.slice(0, 8) + "…" + id.slice(-6) : "-";
}

function seconds(ms) {
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 120) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}

function ago(rfc3339) {
  return seconds(Math.max(0, Date.now() - Date.parse(rfc3339))) + " ago";
}

function duration(job) {
  if (!job.started_at) return "-";
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return seconds(end - Date.parse(job.started_at));
}

function localTime(rfc3339) {
  return new Date(rfc3339).toLocaleString();
}

/** Resolves with true when the operator confirms `text`. */
function confirmAction(title, text, action) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const ok = document.getElementById("confirm-ok");
  ok.textContent = action;
  ok.className = /purge/i.test(action) ? "danger" : "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

function hashParams() {
  const query = location.hash.split("?")[1] || "";
  return new URLSearchParams(query);
}

/** Runs `tick` every `ms` while the current view lasts. */
function every(ms, tick) {
  const mine = generation;
  const loop = async () => {
    if (mine !== generation) return;
    await tick();
    if (mine === generation) setTimeout(loop, ms);
  };
  setTimeout(loop, ms);
}

// ---------- identity and key ----------

function openKeyForm() {
  const form = document.getElementById("key-form");
  form.hidden = false;
  document.getElementById("key-button").setAttribute("aria-expanded", "true");
  document.getElementById("key-input").focus();
}

async function loadIdentity() {
  const identity = document.getElementById("identity");
  try {
    me = await api("/me");
    identity.textContent = me.owner + (me.operator ? " · operator" : "");
  } catch (err) {
    me = null;
    identity.textContent = err instanceof ApiFailure && err.status === 401 ? "not signed in" : "unknown";
    if (err instanceof ApiFailure && err.status === 401) openKeyForm();
  }
  for (const item of document.querySelectorAll("[data-operator]")) {
    item.hidden = !(me && me.operator);
  }
}

async function loadTasks() {
  try {
    const doc = await api("/openapi.json");
    const variants = doc.components.schemas.SubmitRequest.oneOf || [];
    const names = variants.map((v) => v.title).filter(Boolean);
    if (names.length) tasks = names;
  } catch (_) {
    // The defaults stand.
  }
}

// ---------- jobs ----------

async function jobsView() {
  const params = hashParams();
  const status = params.get("status") || "";
  const task = params.get("task") || "";
  const cursor = params.get("cursor") || "";
  const back = params.getAll("back");
  const setHash = (changes) => {
    const next = new URLSearchParams();
    const merged = Object.assign({ status, task }, changes);
    for (const [k, v] of Object.entries(merged)) {
      if (k === "back") continue;
      if (v) next.set(k, v);
    }
    for (const b of changes.back || []) next.append("back", b);
    location.hash = "#/jobs" + (next.toString() ? "?" + next : "");
  };

  const statusSelect = h("select", { id: "filter-status", onchange: (e) => setHash({ status: e.target.value }) },
    h("option", { value: "" }, "Any status"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)));
  const taskSelect = h("select", { id: "filter-task", onchange: (e) => setHash({ task: e.target.value }) },
    h("option", { value: "" }, "Any task"),
    tasks.map((t) => h("option", { value: t, selected: t === task }, t)));
  const search = h("input", { id: "job-search", type: "search", placeholder: "job id", spellcheck: "false", autocomplete: "off" });
  const searchForm = h("form", {
    class: "field grow", role: "search",
    onsubmit: (e) => {
      e.preventDefault();
      const id = search.value.trim();
      if (id) location.hash = "#/jobs/" + encodeURIComponent(id);
    },
  }, h("label", { for: "job-search" }, "Find a job by id"),
  h("div", { class: "bar" }, search, h("button", { type: "submit" }, "Open")));
  const live = h("input", { type: "checkbox", id: "live", checked: !cursor });
  const body = h("tbody");
  const table = h("div", { class: "table-wrap" }, h("table", { "aria-describedby": "jobs-caption" },
    h("caption", { id: "jobs-caption", class: "dim", style: "text-align:left;padding:8px 12px" }, "Your jobs, newest first"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Job"), h("th", { scope: "col" }, "Task"), h("th", { scope: "col" }, "Status"),
      h("th", { scope: "col", class: "num hide-narrow" }, "Attempts"), h("th", { scope: "col", class: "num" }, "Age"),
      h("th", { scope: "col", class: "num hide-narrow" }, "Duration"))),
    body));
  const pager = h("div", { class: "pager" });
  fill(view,
    h("h1", {}, "Jobs"),
    h("div", { class: "toolbar" },
      h("div", { class: "field" }, h("label", { for: "filter-status" }, "Status"), statusSelect),
      h("div", { class: "field" }, h("label", { for: "filter-task" }, "Task"), taskSelect),
      searchForm,
      h("label", { class: "check", for: "live" }, live, "Live"),
      h("button", { type: "button", class: "ghost", onclick: () => load() }, "Refresh")),
    table, pager);

  async function load() {
    const query = new URLSearchParams({ limit: "20" });
    if (status) query.set("status", status);
    if (task) query.set("task", task);
    if (cursor) query.set("cursor", cursor);
    let page;
    try {
      page = await api("/jobs?" + query);
      clearBanner();
    } catch (err) {
      failed(err);
      return;
    }
    fill(body, ...page.jobs.map((job) => h("tr", { "data-job": job.id },
      h("td", {}, h("a", { href: "#/jobs/" + job.id, class: "mono", title: job.id }, shortId(job.id))),
      h("td", {}, job.task),
      h("td", {}, chip(job.status)),
      h("td", { class: "num hide-narrow" }, job.attempts),
      h("td", { class: "num" }, ago(job.created_at)),
      h("td", { class: "num hide-narrow" }, duration(job)))));
    if (!page.jobs.length) {
      fill(body, h("tr", {}, h("td", { colspan: "6", class: "empty" },
        status || task ? "No jobs match these filters on this page." : "No jobs yet. Submit one from Try it.")));
    }
    fill(pager, ...[
      back.length || cursor
        ? h("button", { type: "button", class: "ghost", onclick: () => setHash({ cursor: back[back.length - 1] || "", back: back.slice(0, -1) }) }, "Newer")
        : null,
      page.next_cursor
        ? h("button", { type: "button", class: "ghost", onclick: () => setHash({ cursor: page.next_cursor, back: back.concat(cursor ? [cursor] : [""]) }) }, "Older")
        : null].filter(Boolean));
  }
  await load();
  every(3000, async () => {
    if (live.checked) await load();
  });
}

// ---------- one job ----------

function preview(value) {
  const text = JSON.stringify(value, null, 2);
  return h("pre", { class: "preview" }, text.length > 4000 ? text.slice(0, 4000) + "\n…" : text);
}

function inputPreview(job) {
  const input = job.input;
  if (!input) return h("p", { class: "dim" }, "-");
  if (job.task === "embed" && Array.isArray(input.texts)) {
    return h("ol", {}, input.texts.map((t) => h("li", {}, t)));
  }
  if (job.task === "rank" && Array.isArray(input.documents)) {
    return h("div", {}, h("p", {}, h("strong", {}, "Query: "), input.query),
      h("ol", { start: "0" }, input.documents.map((d) => h("li", {}, d))));
  }
  if (job.task === "classify" && Array.isArray(input.labels)) {
    return h("div", {}, h("p", {}, h("strong", {}, "Text: "), input.text),
      h("p", {}, h("strong", {}, "Labels: "), input.labels.join(", ")));
  }
  return preview(input);
}

function outputPreview(job) {
  const out = job.output;
  if (!out) return h("p", { class: "dim" }, job.status === "succeeded" ? "-" : "Not yet: the job is " + job.status + ".");
  if (job.task === "classify" && Array.isArray(out.scores)) {
    const max = Math.max(...out.scores.map((s) => Math.abs(s.score)), 1e-9);
    return h("div", { class: "output" }, h("p", {}, h("strong", {}, "Label: "), h("span", { id: "output-label" }, out.label)),
      out.scores.map((s) => h("div", { class: "bar" }, h("span", { style: "min-width:8em" }, s.label),
        h("span", { class: "fill", style: `width:${Math.max(2, 200 * Math.abs(s.score) / max)}px` }),
        h("span", { class: "mono" }, s.score.toFixed(4)))));
  }
  if (job.task === "rank" && Array.isArray(out.order)) {
    const docs = (job.input && job.input.documents) || [];
    return h("ol", { class: "output" }, out.order.map((i) => h("li", {},
      h("span", { class: "mono" }, out.scores[i].toFixed(4)), " · ", docs[i] === undefined ? "document " + i : docs[i])));
  }
  if (job.task === "embed" && Array.isArray(out.embeddings)) {
    return h("div", { class: "output" },
      h("p", {}, `${out.embeddings.length} vector(s) of ${out.dimensions} dimensions (${out.model}, ${out.encoding_format})`),
      h("pre", { class: "preview" }, out.embeddings.map((v, i) =>
        `#${i}: ` + (Array.isArray(v) ? "[" + v.slice(0, 6).map((x) => x.toFixed(4)).join(", ") + ", …]" : String(v).slice(0, 60) + "…")).join("\n")));
  }
  if (out.result) {
    return h("div", { class: "output" }, h("p", {}, `${out.chunks} chunk(s) of ${out.dimensions} dimensions`),
      h("button", { type: "button", class: "ghost", onclick: () => openResult(job.id) }, "Download the result"));
  }
  return preview(out);
}

async function openResult(id) {
  try {
    const result = await api("/jobs/" + encodeURIComponent(id) + "/result");
    if (result && result.url) location.href = result.url;
  } catch (err) {
    failed(err);
  }
}

function timeline(job) {
  const created = Date.parse(job.created_at);
  const started = job.started_at ? Date.parse(job.started_at) : null;
  const finished = job.finished_at ? Date.parse(job.finished_at) : null;
  const step = (label, at, note) => h("li", { class: at ? "" : "pending" },
    h("strong", {}, label), " ", at ? h("time", { datetime: new Date(at).toISOString() }, new Date(at).toLocaleTimeString()) : h("span", { class: "dim" }, "not yet"),
    note ? h("span", { class: "dim" }, " · " + note) : null);
  return h("ol", { class: "timeline", "aria-label": "Timeline" },
    step("Created", created),
    step("Claimed", started, started ? "waited " + seconds(started - created) + " in the queue" : null),
    step(job.status === "cancelled" ? "Cancelled" : "Finished", finished, finished && started ? "ran " + seconds(finished - started) : null));
}

async function jobView(id) {
  const mine = generation;
  fill(view, h("h1", {}, "Job ", h("span", { class: "mono" }, id)), h("p", { class: "dim" }, "Loading…"));
  let job;
  try {
    job = await api("/jobs/" + encodeURIComponent(id) + "?include=input");
    clearBanner();
  } catch (err) {
    if (err instanceof ApiFailure && err.status === 404) {
      fill(view, h("h1", {}, "Job not found"), h("p", {}, "No job ", h("span", { class: "mono" }, id), " belongs to you."));
      return;
    }
    failed(err);
    return;
  }
  const render = (job) => {
    const cancel = !["succeeded", "failed", "cancelled"].includes(job.status)
      ? h("button", { type: "button", class: "ghost", onclick: async () => {
        if (!(await confirmAction("Cancel this job?", "A queued job ends cancelled; a running job ends cancelled and its result is discarded.", "Cancel job"))) return;
        try {
          render(await api("/jobs/" + encodeURIComponent(job.id), { method: "DELETE" }));
        } catch (err) {
          failed(err);
        }
      } }, "Cancel job")
      : null;
    const webhook = job.webhook
      ? h("section", { class: "panel" }, h("h2", {}, "Webhook"), h("dl", { class: "facts" },
        h("dt", {}, "URL"), h("dd", { class: "mono" }, job.webhook.url),
        h("dt", {}, "Events"), h("dd", {}, job.webhook.events.join(", ")),
        h("dt", {}, "Not yet sent"), h("dd", {}, job.webhook.unsent.length ? job.webhook.unsent.join(", ") : "none: every due event went to the webhooks queue"),
        job.webhook.gone ? [h("dt", {}, "Receiver"), h("dd", {}, "answered 410 Gone: nothing more is sent")] : null))
      : null;
    fill(view,
      h("h1", {}, "Job ", h("span", { class: "mono", id: "job-id" }, job.id), " ", h("span", { id: "job-status" }, chip(job.status))),
      h("div", { class: "grid" },
        h("section", { class: "panel" }, h("h2", {}, "Timeline"), timeline(job)),
        h("section", { class: "panel" }, h("h2", {}, "Facts"), h("dl", { class: "facts" },
          h("dt", {}, "Task"), h("dd", {}, job.task),
          h("dt", {}, "Attempts"), h("dd", { id: "job-attempts" }, job.attempts),
          h("dt", {}, "Created"), h("dd", {}, localTime(job.created_at)),
          h("dt", {}, "Duration"), h("dd", {}, duration(job)),
          job.cancel_requested ? [h("dt", {}, "Cancel"), h("dd", {}, "requested")] : null),
        h("p", {}, cancel))),
      job.progress ? h("section", { class: "panel" }, h("h2", {}, "Progress"),
        h("label", { for: "job-progress" }, `${job.progress.done} of ${job.progress.total} chunks`),
        h("progress", { id: "job-progress", max: String(job.progress.total || 1), value: String(job.progress.done) })) : null,
      job.error ? h("section", { class: "panel" }, h("h2", {}, "Error"),
        h("div", { class: "error-box", id: "job-error" }, h("strong", { class: "mono" }, job.error.code), ": ", job.error.message)) : null,
      h("section", { class: "panel" }, h("h2", {}, "Input"), inputPreview(job)),
      h("section", { class: "panel" }, h("h2", {}, "Output"), outputPreview(job)),
      webhook);
  };
  render(job);
  // Long-poll until the job ends, as a client would.
  while (mine === generation && !["succeeded", "failed", "cancelled"].includes(job.status)) {
    try {
      job = await api("/jobs/" + encodeURIComponent(id) + "?include=input&wait=20");
      if (mine === generation) render(job);
    } catch (err) {
      if (mine === generation) failed(err);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

// ---------- queues ----------

function operatorsOnly(title) {
  if (!me) {
    fill(view, h("h1", {}, title), h("div", { class: "panel", id: "operators-only" },
      h("p", {}, "Operators only: sign in with an operator's API key (the API key button).")));
    return;
  }
  fill(view, h("h1", {}, title), h("div", { class: "panel", id: "operators-only" },
    h("p", {}, "Operators only. You (", me.owner, ") have no operator rights; the admin routes answer 403."),
    h("p", { class: "dim" }, "Locally, list operators in OFFPATH_OPERATORS; in AWS, give them the operator claim (OFFPATH_OPERATOR_CLAIM).")));
}

function barChart(title, minutes, series, format) {
  const width = 600, height = 150, left = 44, bottom = 20, top = 8;
  const totals = minutes.map((_, i) => series.reduce((sum, s) => sum + s.values[i], 0));
  const max = Math.max(1, ...totals);
  const slot = (width - left) / minutes.length;
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const bars = [];
  minutes.forEach((minute, i) => {
    let base = 0;
    for (const s of series) {
      const v = s.values[i];
      if (v > 0) {
        bars.push(svg("rect", { x: left + i * slot + 2, y: y(base + v), width: Math.max(1, slot - 4), height: y(base) - y(base + v), fill: s.color },
          svg("title", {}, `${new Date(minute).toLocaleTimeString()}: ${s.name} ${format(v)}`)));
      }
      base += v;
    }
  });
  const ends = [["start", 0, left], ["middle", Math.floor(minutes.length / 2), null], ["end", minutes.length - 1, width]];
  const labels = ends.map(([anchor, i, x]) => svg("text",
    { x: x === null ? left + i * slot + slot / 2 : x, y: height - 5, "text-anchor": anchor },
    new Date(minutes[i]).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
  const summary = series.map((s) => `${s.name}: ${format(s.values.reduce((a, b) => a + b, 0))} in all`).join("; ");
  return h("figure", { class: "panel", style: "margin:0" },
    h("figcaption", {}, h("strong", {}, title), " ", h("span", { class: "legend" }, series.map((s) => h("span", {}, h("span", { class: "swatch", style: "background:" + s.color }), s.name)))),
    svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": `${title}. ${summary}` },
      svg("line", { x1: left, x2: width, y1: y(0), y2: y(0), stroke: "#dde1e8" }),
      svg("text", { x: left - 6, y: y(max) + 10, "text-anchor": "end" }, format(max)),
      svg("text", { x: left - 6, y: y(0), "text-anchor": "end" }, "0"),
      bars, labels));
}

async function queuesView() {
  if (!me || !me.operator) return operatorsOnly("Queues");
  const cards = h("div", { class: "grid", id: "queue-cards" });
  const charts = h("div", { class: "grid", style: "grid-template-columns:repeat(auto-fit,minmax(300px,1fr))" });
  const stamp = h("p", { class: "dim" });
  fill(view, h("h1", {}, "Queues"), cards, h("h2", {}, "The last 15 minutes"), charts, stamp);
  const load = async () => {
    let data;
    try {
      data = await api("/admin/queues?minutes=15");
      clearBanner();
    } catch (err) {
      if (err instanceof ApiFailure && err.status === 403) return operatorsOnly("Queues");
      failed(err);
      return;
    }
    fill(cards, ...data.queues.map((q) => h("section", { class: "panel", "data-queue": q.name },
      h("h2", { style: "margin-top:0" }, q.name.replace("_", " ")),
      h("div", { class: "figures" },
        h("div", { class: "stat" }, h("span", { class: "big" }, q.visible), h("span", { class: "dim" }, "visible")),
        h("div", { class: "stat" }, h("span", { class: "big" }, q.in_flight), h("span", { class: "dim" }, "in flight")),
        h("div", { class: "stat" }, h("span", { class: "big" }, q.delayed), h("span", { class: "dim" }, "delayed"))))));
    const now = Date.parse(data.at);
    const last = now - (now % 60000);
    const minutes = Array.from({ length: 15 }, (_, i) => last - (14 - i) * 60000);
    const at = new Map(data.activity.map((m) => [m.minute_epoch_ms, m]));
    const pick = (f) => minutes.map((m) => (at.has(m) ? f(at.get(m)) : 0));
    fill(charts,
      barChart("Jobs finished per minute", minutes, [
        { name: "succeeded", color: "#1d7a46", values: pick((m) => m.succeeded) },
        { name: "failed", color: "#b42318", values: pick((m) => m.failed) },
      ], (v) => String(Math.round(v))),
      barChart("Mean queue wait", minutes, [
        { name: "wait", color: "#2f5bd3", values: pick((m) => (m.claimed ? m.queue_wait_ms / m.claimed : 0)) },
      ], (v) => seconds(v)));
    stamp.textContent = "Read " + new Date(data.at).toLocaleTimeString() + "; refreshed every 5 s.";
  };
  await load();
  every(5000, load);
}

// ---------- dead letters ----------

async function deadLettersView() {
  if (!me || !me.operator) return operatorsOnly("Dead letters");
  const body = h("tbody");
  const summary = h("p", { class: "dim", id: "dlq-summary" });
  const selectedIds = () => [...body.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
  const redrive = async (ids) => {
    const what = ids ? `${ids.length} message(s)` : "every message in the dead-letter queue";
    if (!(await confirmAction("Redrive?", `Put the jobs of ${what} back to queued and their messages in the jobs queue, one job at a time.`, "Redrive"))) return;
    try {
      const done = await api("/admin/dead-letters/redrive", { method: "POST", body: ids ? { ids } : { all: true } });
      showBanner("info", `Redrove ${done.moved.length} message(s)` + (done.skipped.length ? `; left ${done.skipped.length}: ` + done.skipped.map((s) => s.reason).join(", ") : "."));
    } catch (err) {
      failed(err);
    }
    await load();
  };
  const purge = async () => {
    if (!(await confirmAction("Purge the dead-letter queue?", "Every message is deleted for good; the jobs stay failed. SQS allows one purge a minute.", "Purge"))) return;
    try {
      await api("/admin/dead-letters/purge", { method: "POST", body: { confirm: "purge" } });
      showBanner("info", "Purged the dead-letter queue.");
    } catch (err) {
      failed(err);
    }
    await load();
  };
  const selectedButton = h("button", { type: "button", id: "redrive-selected", disabled: true, onclick: () => redrive(selectedIds()) }, "Redrive selected");
  const updateSelected = () => { selectedButton.disabled = selectedIds().length === 0; };
  fill(view,
    h("h1", {}, "Dead letters"),
    h("p", { class: "dim" }, "The jobs queue's dead-letter queue: jobs that failed their last attempt. Fix the cause, then redrive."),
    h("div", { class: "toolbar" }, selectedButton,
      h("button", { type: "button", id: "redrive-all", onclick: () => redrive(null) }, "Redrive all"),
      h("button", { type: "button", id: "purge", class: "danger", onclick: purge }, "Purge"),
      h("button", { type: "button", id: "dlq-refresh", class: "ghost", onclick: () => load() }, "Refresh")),
    h("div", { class: "table-wrap" }, h("table", { class: "stack" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, h("span", { class: "dim" }, "Select")), h("th", { scope: "col" }, "Job"),
        h("th", { scope: "col" }, "Error"), h("th", { scope: "col", class: "num" }, "Receives"),
        h("th", { scope: "col", class: "num" }, "Age"), h("th", { scope: "col" }, h("span", { class: "dim" }, "Action")))),
      body)),
    summary);

  // One listing at a time: a listing holds the messages it reads for a moment (queues
  // have no peek), so a second one at once would see an empty queue.
  let listing = null;
  const load = () => (listing = listing || list().finally(() => { listing = null; }));
  async function list() {
    let data;
    try {
      data = await api("/admin/dead-letters?limit=100");
    } catch (err) {
      if (err instanceof ApiFailure && err.status === 403) return operatorsOnly("Dead letters");
      failed(err);
      return;
    }
    fill(body, ...data.letters.map((l) => {
      const label = "Select message " + l.message_id + (l.job_id ? " of job " + l.job_id : "");
      return h("tr", { "data-message": l.message_id, "data-job": l.job_id || "" },
        h("td", {}, h("input", { type: "checkbox", value: l.message_id, "aria-label": label, onchange: updateSelected })),
        h("td", { "data-label": "Job" }, l.job_id ? h("a", { href: "#/jobs/" + l.job_id, class: "mono", title: l.job_id }, shortId(l.job_id)) : h("span", { class: "dim" }, "not a job"),
          l.task ? h("div", { class: "dim" }, l.task) : null),
        h("td", { class: "letter-error", "data-label": "Error" }, l.error ? [h("strong", { class: "mono" }, l.error.code), ": ", l.error.message] : "-"),
        h("td", { class: "num", "data-label": "Receives" }, l.receive_count),
        h("td", { class: "num", "data-label": "Age" }, ago(l.sent_at)),
        h("td", {}, h("button", { type: "button", class: "ghost", "aria-label": "Redrive " + (l.job_id || l.message_id), onclick: () => redrive([l.message_id]) }, "Redrive")));
    }));
    if (!data.letters.length) fill(body, h("tr", {}, h("td", { colspan: "6", class: "empty" }, "The dead-letter queue is empty.")));
    summary.textContent = `${data.letters.length} message(s) shown of about ${data.depth}.`;
    updateSelected();
  }
  await load();
}

// ---------- try it ----------

function tryView() {
  const taskSelect = h("select", { id: "try-task" }, tasks.map((t) => h("option", { value: t }, t)));
  const fields = h("div");
  const result = h("div", { id: "try-result", "aria-live": "polite" });
  const renderFields = () => {
    const t = taskSelect.value;
    const area = (id, label, value) => h("div", { class: "field" }, h("label", { for: id }, label), h("textarea", { id }, value));
    const line = (id, label, value) => h("div", { class: "field" }, h("label", { for: id }, label), h("input", { id, type: "text", value }));
    if (t === "embed") fill(fields, area("try-texts", "Texts, one per line", "The weather is lovely today.\nIt is sunny outside."));
    else if (t === "rank") fill(fields, line("try-query", "Query", "How do I reset my password?"),
      area("try-documents", "Documents, one per line", "Click 'Forgot password' on the sign-in page.\nOur office is open from 9 to 5.\nInvoices are sent monthly."));
    else if (t === "classify") fill(fields, line("try-text", "Text", "The package arrived broken and nobody answers my emails."),
      line("try-labels", "Labels, separated by commas", "complaint, praise, question"));
    else if (t === "embed_document") fill(fields, area("try-document", "Document text", "offpath takes heavy AI work off the request path. ".repeat(40)));
    else fill(fields, area("try-json", "Input (JSON)", "{}"));
  };
  taskSelect.addEventListener("change", renderFields);
  const lines = (id) => document.getElementById(id).value.split("\n").map((s) => s.trim()).filter(Boolean);
  const value = (id) => document.getElementById(id).value.trim();
  const input = () => {
    switch (taskSelect.value) {
      case "embed": return { texts: lines("try-texts") };
      case "rank": return { query: value("try-query"), documents: lines("try-documents") };
      case "classify": return { text: value("try-text"), labels: value("try-labels").split(",").map((s) => s.trim()).filter(Boolean) };
      case "embed_document": return { text: value("try-document") };
      default: return JSON.parse(value("try-json"));
    }
  };
  const submit = h("button", { type: "submit", id: "try-submit" }, "Submit job");
  const form = h("form", { class: "panel", onsubmit: async (e) => {
    e.preventDefault();
    const mine = generation;
    submit.disabled = true;
    fill(result, h("p", {}, "Submitting…"));
    try {
      let job = await api("/jobs", { method: "POST", body: { task: taskSelect.value, input: input() } });
      clearBanner();
      const show = (job) => fill(result, h("section", { class: "panel" },
        h("h2", {}, "Job ", h("a", { href: "#/jobs/" + job.id, class: "mono", id: "try-job" }, job.id), " ", h("span", { id: "try-status" }, chip(job.status))),
        job.error ? h("div", { class: "error-box" }, h("strong", { class: "mono" }, job.error.code), ": ", job.error.message) : null,
        outputPreview(Object.assign({ input: input() }, job))));
      show(job);
      while (mine === generation && !["succeeded", "failed", "cancelled"].includes(job.status)) {
        job = await api("/jobs/" + job.id + "?wait=20");
        if (mine === generation) show(job);
      }
    } catch (err) {
      if (err instanceof SyntaxError) showBanner("error", "The input is not valid JSON: " + err.message);
      else failed(err);
      fill(result);
    } finally {
      submit.disabled = false;
    }
  } },
  h("div", { class: "field" }, h("label", { for: "try-task" }, "Task"), taskSelect),
  fields, h("p", {}, submit));
  fill(view, h("h1", {}, "Try it"), h("p", { class: "dim" }, "Submit a job as a client would and watch its result arrive (long-poll)."), form, result);
  renderFields();
}

// ---------- router ----------

async function route() {
  generation += 1;
  clearBanner();
  if (!me) await loadIdentity();
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/jobs";
  const [, section, id] = path.split("/");
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (section === "jobs" && id) return jobView(decodeURIComponent(id));
  if (section === "queues") return queuesView();
  if (section === "dead-letters") return deadLettersView();
  if (section === "try") return tryView();
  return jobsView();
}

document.getElementById("key-button").addEventListener("click", () => {
  const form = document.getElementById("key-form");
  if (form.hidden) openKeyForm();
  else {
    form.hidden = true;
    document.getElementById("key-button").setAttribute("aria-expanded", "false");
  }
});
document.getElementById("key-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  sessionStorage.setItem("offpath.key", document.getElementById("key-input").value.trim());
  document.getElementById("key-input").value = "";
  e.target.hidden = true;
  document.getElementById("key-button").setAttribute("aria-expanded", "false");
  await loadIdentity();
  route();
});
document.getElementById("key-clear").addEventListener("click", async () => {
  sessionStorage.removeItem("offpath.key");
  await loadIdentity();
  route();
});
window.addEventListener("hashchange", () => {
  route();
  view.focus();
});

(async () => {
  await Promise.all([loadIdentity(), loadTasks()]);
  route();
})();
