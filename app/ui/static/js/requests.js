// Requests: the request log (who, model, node, status, duration, tokens),
// newest first, with filters, paging and an optional auto-refresh.
import { $, h, api, banner, clearBanner, initPage, fmtTime, fmtMs, fmtNum, fmtBytes, emptyRow, pager, toLocalInput, fromLocalInput, setSelect } from "./lib.js";

await initPage();

const COLS = 9;
const AUTO_MS = 5000;
const form = $("#req-filters");
const body = $("#requests-body");
const params = new URLSearchParams(location.search);
let offset = Number(params.get("offset")) || 0;

// The filters live in the address, so a view can be shared and survives a
// reload.
const inputs = { model: $("#req-model"), node: $("#req-node"), who: $("#req-who"), status: $("#req-status") };
for (const [k, el] of Object.entries(inputs)) {
  if (el.tagName === "SELECT") setSelect(el, params.get(k));
  else el.value = params.get(k) || "";
}
setSelect($("#req-limit"), params.get("limit") || "50");
$("#req-since").value = toLocalInput(params.get("since"));
$("#req-until").value = toLocalInput(params.get("until"));

function filters() {
  const q = new URLSearchParams();
  const set = (k, v) => { if (v) q.set(k, v); };
  for (const [k, el] of Object.entries(inputs)) set(k, el.value.trim());
  set("since", fromLocalInput($("#req-since").value));
  set("until", fromLocalInput($("#req-until").value, { end: true }));
  q.set("limit", $("#req-limit").value);
  return q;
}

function statusClass(s) {
  if (s >= 500) return "status-5xx";
  if (s >= 400) return "status-4xx";
  if (s >= 300) return "status-3xx";
  return "status-2xx";
}

// filterCell shows a value that, clicked, becomes a filter.
function filterCell(field, value, label = value) {
  if (!value) return h("td", { class: "muted", text: "–" });
  return h("td", {}, h("button", {
    class: "cell-filter", type: "button", text: label, title: `Show only ${field} ${value}`,
    data: { filter: field },
    on: { click: () => { inputs[field].value = value; offset = 0; load(); } },
  }));
}

function tokens(r) {
  if (!r.prompt_tokens && !r.completion_tokens) return h("td", { class: "num muted", text: "–" });
  return h("td", { class: "num", title: `${fmtNum(r.prompt_tokens)} prompt, ${fmtNum(r.completion_tokens)} completion` },
    h("span", { text: fmtNum(r.prompt_tokens) }), h("span", { class: "muted", text: " / " }), h("span", { text: fmtNum(r.completion_tokens) }));
}

function row(r) {
  const status = Number(r.status) || 0;
  return h("tr", { class: `req-row ${statusClass(status)}`, data: { requestId: r.request_id || "", status } },
    h("td", { class: "nowrap mono small", text: fmtTime(r.time), title: r.time || "" }),
    h("td", {}, h("span", { class: `status-code ${statusClass(status)}`, text: String(status || "?") })),
    h("td", { class: "req-path" },
      h("div", { class: "mono small" }, h("span", { class: "req-method", text: r.method || "" }), " ", h("span", { text: r.path || "" })),
      r.error ? h("div", { class: "req-error small", text: r.error }) : null,
      r.request_id ? h("div", { class: "muted small mono", text: r.request_id, title: "X-Request-Id" }) : null),
    filterCell("model", r.model),
    filterCell("node", r.node),
    filterCell("who", r.who),
    h("td", { class: "num" }, h("div", { text: fmtMs(r.duration_ms) }),
      r.ttfb_ms ? h("div", { class: "muted small", text: `first byte ${fmtMs(r.ttfb_ms)}` }) : null),
    tokens(r),
    h("td", { class: "num", text: fmtBytes(r.bytes) }));
}

let loading = null;

// load reads the current page. quiet (auto-refresh) keeps the rows on the
// screen until the new ones arrive.
async function load({ quiet = false } = {}) {
  const q = filters();
  const limit = Number(q.get("limit"));
  q.set("offset", String(offset));
  history.replaceState(null, "", `?${q}`);
  if (loading) loading.abort();
  const ctl = new AbortController();
  loading = ctl;
  if (!quiet) body.replaceChildren(emptyRow(COLS, "Loading…"));
  try {
    const data = await api("GET", `/api/requests?${q}`, undefined, { signal: ctl.signal });
    const results = (data && data.results) || [];
    clearBanner("requests");
    body.replaceChildren(...(results.length ? results.map(row) : [emptyRow(COLS, "No requests match these filters.")]));
    pager($("#pager"), {
      // The server's limit: it caps what was asked (a limit from the address bar).
      offset, limit: Number(data.limit) || limit, count: typeof data.count === "number" ? data.count : null, shown: results.length,
      hasMore: typeof data.has_more === "boolean" ? data.has_more : undefined,
      onPage: (o) => { offset = o; load(); },
    });
    setLive(true);
  } catch (e) {
    if (e.name === "AbortError") return;
    setLive(false);
    if (quiet) {
      banner(`Could not refresh the requests: ${e.message}`, "error", { key: "requests" });
      return;
    }
    body.replaceChildren(emptyRow(COLS, `Could not read the requests: ${e.message}`));
    $("#pager").replaceChildren();
  } finally {
    if (loading === ctl) loading = null;
  }
}

// ---- auto-refresh ---------------------------------------------------------

const auto = $("#req-auto");
const live = $("#req-live");
let timer = null;

function setLive(ok) {
  live.classList.toggle("live-error", !ok);
  $("#req-live-text").textContent = ok ? `Updated ${new Date().toLocaleTimeString()}` : "Refresh failed";
}

function schedule() {
  clearTimeout(timer);
  timer = null;
  live.hidden = !auto.checked;
  if (!auto.checked) return;
  timer = setTimeout(async () => {
    if (!document.hidden && !loading) await load({ quiet: true });
    schedule();
  }, AUTO_MS);
}

try { auto.checked = localStorage.getItem("aivonx-requests-auto") === "1"; } catch { /* ignore */ }
auto.addEventListener("change", () => {
  try { localStorage.setItem("aivonx-requests-auto", auto.checked ? "1" : "0"); } catch { /* ignore */ }
  if (auto.checked) load({ quiet: true });
  schedule();
});
document.addEventListener("visibilitychange", () => { if (!document.hidden && auto.checked) { load({ quiet: true }); schedule(); } });

// ---- suggestions ------------------------------------------------------------

// The fleet's models and node names, as suggestions for the filters (from
// the state the dashboard reads, which is not itself logged).
async function suggest() {
  try {
    const st = await api("GET", "/api/proxy/state");
    const nodes = (st && Array.isArray(st.nodes)) ? st.nodes : [];
    const models = new Set();
    for (const n of nodes) for (const m of n.models || []) if (typeof m === "string" && m) models.add(m);
    $("#req-models").replaceChildren(...[...models].sort().map((m) => h("option", { value: m })));
    $("#req-nodes").replaceChildren(...nodes.map((n) => n.name).filter(Boolean).sort().map((n) => h("option", { value: n })));
  } catch { /* suggestions are optional */ }
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  offset = 0;
  load();
});
$("#req-reset").addEventListener("click", () => {
  form.reset();
  $("#req-limit").value = "50";
  offset = 0;
  load();
});
for (const id of ["#req-status", "#req-limit"]) $(id).addEventListener("change", () => { offset = 0; load(); });

load();
schedule();
suggest();
