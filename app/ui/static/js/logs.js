// Logs: filter the proxy's JSON logs by level, text and time, page through
// them newest first.
import { $, h, api, banner, clearBanner, initPage, fmtTime, emptyRow, pager, toLocalInput, fromLocalInput, setSelect } from "./lib.js";

await initPage();

const form = $("#log-filters");
const body = $("#logs-body");
const params = new URLSearchParams(location.search);
let offset = Number(params.get("offset")) || 0;

// The filters live in the address, so a view can be shared and survives a
// reload.
$("#log-query").value = params.get("query") || "";
setSelect($("#log-level"), params.get("level"));
setSelect($("#log-source"), params.get("source"));
setSelect($("#log-limit"), params.get("limit") || "50");
$("#log-start").value = toLocalInput(params.get("start"));
$("#log-end").value = toLocalInput(params.get("end"));

function filters() {
  const q = new URLSearchParams();
  const set = (k, v) => { if (v) q.set(k, v); };
  set("query", $("#log-query").value.trim());
  set("level", $("#log-level").value);
  set("source", $("#log-source").value);
  set("start", fromLocalInput($("#log-start").value));
  set("end", fromLocalInput($("#log-end").value, { end: true }));
  q.set("limit", $("#log-limit").value);
  return q;
}

const LEVELS = { DEBUG: "debug", INFO: "info", WARN: "warn", WARNING: "warn", ERROR: "error", CRITICAL: "error", FATAL: "error" };

function fieldText(v) {
  if (v === null || v === undefined) return "null";
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

// accessSummary sums up an access line: "GET /api/chat → 200".
function accessSummary(a) {
  if (typeof a.method !== "string" || typeof a.path !== "string") return null;
  return h("div", { class: "muted mono small", text: `${a.method} ${a.path}${a.status !== undefined ? ` → ${a.status}` : ""}` });
}

function row(e) {
  const level = String(e.level || "").toUpperCase();
  const attrs = Object.entries(e.attrs || {});
  return h("tr", { class: `log-${LEVELS[level] || "info"}` },
    h("td", { class: "nowrap mono small", text: fmtTime(e.time), title: e.time || "" }),
    h("td", {}, h("span", { class: `level level-${LEVELS[level] || "info"}`, text: level || "?" })),
    h("td", { class: "log-msg" }, h("div", { text: e.msg ?? e.message ?? "" }), accessSummary(e.attrs || {})),
    h("td", {}, h("div", { class: "log-attrs" }, attrs.map(([k, v]) => {
      const text = fieldText(v);
      return h("span", { class: "attr", title: `${k}=${text}` }, h("span", { class: "attr-key", text: k }), h("span", { class: "attr-eq", text: "=" }), h("span", { class: "attr-val", text: text.length > 120 ? `${text.slice(0, 120)}…` : text }));
    }))));
}

async function load() {
  const q = filters();
  const limit = Number(q.get("limit"));
  q.set("offset", String(offset));
  history.replaceState(null, "", `?${q}`);
  body.replaceChildren(emptyRow(4, "Loading…"));
  try {
    const data = await api("GET", `/api/logs?${q}`);
    const results = (data && data.results) || [];
    if (data && data.truncated) banner("The search took too long: these are the lines found so far. Narrow the time range.", "info", { key: "logs" });
    else clearBanner("logs");
    body.replaceChildren(...(results.length ? results.map(row) : [emptyRow(4, "No log lines match these filters.")]));
    pager($("#pager"), {
      // The server's limit: it caps what was asked (a limit from the address bar).
      offset, limit: Number(data.limit) || limit, count: typeof data.count === "number" ? data.count : null, shown: results.length,
      hasMore: typeof data.has_more === "boolean" ? data.has_more : undefined,
      onPage: (o) => { offset = o; load(); },
    });
  } catch (e) {
    body.replaceChildren(emptyRow(4, `Could not read the logs: ${e.message}`));
    $("#pager").replaceChildren();
  }
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  offset = 0;
  load();
});
$("#log-level").addEventListener("change", () => { offset = 0; load(); });
$("#log-limit").addEventListener("change", () => { offset = 0; load(); });
$("#log-source").addEventListener("change", () => { offset = 0; load(); });

load();
