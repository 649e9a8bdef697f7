// Dashboard: the fleet at a glance, refreshed from /api/proxy/state every
// two seconds without reloading the page.
import { $, h, api, banner, clearBanner, initPage, poll, fmtMs, fmtAgo, statusBadge, chips, strategyLabel, emptyRow } from "./lib.js";

await initPage();

const grid = $("#node-grid");
const liveText = $("#live-text");
const live = $("#live");
let lastOK = 0;

function set(id, text) {
  $(id).textContent = text;
}

function renderStats(st, nodes) {
  const count = (s) => nodes.filter((n) => n.status === s).length;
  set("#stat-healthy", `${count("active")} / ${nodes.length}`);
  const parts = [];
  if (count("standby")) parts.push(`${count("standby")} unhealthy`);
  if (count("disabled")) parts.push(`${count("disabled")} disabled`);
  set("#stat-healthy-sub", parts.join(" · ") || (nodes.length ? "all healthy" : "no nodes"));
  set("#stat-active", nodes.reduce((a, n) => a + (n.active_requests || 0), 0).toLocaleString());
  set("#stat-active-sub", `across ${nodes.length} node${nodes.length === 1 ? "" : "s"}`);
  set("#stat-strategy", strategyLabel(st.strategy));
  set("#stat-mode", [st.mode && `${st.mode} mode`, st.version && (/^\d/.test(st.version) ? `v${st.version}` : `version ${st.version}`)].filter(Boolean).join(" · "));
}

function nodeCard(n) {
  const loaded = new Set(n.loaded_models || []);
  const footer = n.status === "standby" && n.reason
    ? h("p", { class: "node-reason", text: n.reason, title: n.reason })
    : h("p", { class: "muted node-check", text: `Checked ${fmtAgo(n.last_check)}` });
  return h("article", { class: `node-card node-${n.status}`, data: { nodeId: n.id, status: n.status } },
    h("header", { class: "node-card-head" },
      h("div", { class: "node-title" },
        h("h3", { class: "node-name", text: n.name, title: n.name }),
        h("span", { class: "node-address mono", text: n.address, title: n.address })),
      statusBadge(n.status, n.reason)),
    h("dl", { class: "node-metrics" },
      h("div", {}, h("dt", { text: "Latency" }), h("dd", { class: "node-latency", text: fmtMs(n.latency_ms) })),
      h("div", {}, h("dt", { text: "Active" }), h("dd", { class: "node-active", text: String(n.active_requests ?? 0) })),
      h("div", {}, h("dt", { text: "Version" }), h("dd", { text: n.version || "–" }))),
    h("div", { class: "node-section" },
      h("h4", { text: `Models (${(n.models || []).length})` }),
      chips(n.models, { empty: "No models", highlight: loaded })),
    h("div", { class: "node-section" },
      h("h4", { text: "Loaded in memory" }),
      chips(n.loaded_models, { empty: "Nothing loaded" })),
    footer);
}

function renderNodes(nodes) {
  if (nodes.length === 0) {
    grid.replaceChildren(h("div", { class: "card empty-card" },
      h("p", { text: "No nodes are configured yet." }),
      h("a", { class: "btn btn-primary", href: "/ui/nodes", text: "Add a node" })));
    return;
  }
  grid.replaceChildren(...nodes.map(nodeCard));
}

function renderModels(nodes) {
  const byModel = new Map();
  for (const n of nodes) {
    for (const m of n.models || []) {
      if (!byModel.has(m)) byModel.set(m, { on: [], loaded: [] });
      byModel.get(m).on.push(n);
    }
    for (const m of n.loaded_models || []) {
      if (!byModel.has(m)) byModel.set(m, { on: [], loaded: [] });
      byModel.get(m).loaded.push(n);
    }
  }
  const names = [...byModel.keys()].sort((a, b) => a.localeCompare(b));
  const loadedCount = names.filter((m) => byModel.get(m).loaded.length).length;
  set("#stat-models", names.length.toLocaleString());
  set("#stat-models-sub", `${loadedCount} loaded in memory`);
  set("#models-caption", `${names.length} model${names.length === 1 ? "" : "s"} on ${nodes.length} node${nodes.length === 1 ? "" : "s"}`);
  const body = $("#models-body");
  if (names.length === 0) {
    body.replaceChildren(emptyRow(3, "No models on any node. Pull one on the Models page."));
    return;
  }
  body.replaceChildren(...names.map((m) => {
    const e = byModel.get(m);
    const healthy = e.on.filter((n) => n.status === "active").length;
    return h("tr", {},
      h("td", { class: "mono", text: m }),
      h("td", {}, h("span", { text: `${e.on.length} of ${nodes.length}` }),
        healthy < e.on.length ? h("span", { class: "muted", text: ` · ${healthy} healthy` }) : null,
        h("div", { class: "muted small", text: e.on.map((n) => n.name).join(", ") })),
      h("td", { text: e.loaded.map((n) => n.name).join(", ") || "–" }));
  }));
}

function setLive(ok, text) {
  live.classList.toggle("live-error", !ok);
  liveText.textContent = text;
}

async function refresh() {
  try {
    const st = await api("GET", "/api/proxy/state");
    const nodes = (st && st.nodes) || [];
    renderStats(st, nodes);
    renderNodes(nodes);
    renderModels(nodes);
    lastOK = Date.now();
    setLive(true, "Live");
    clearBanner("poll");
  } catch (e) {
    setLive(false, lastOK ? `Stale since ${fmtAgo(new Date(lastOK).toISOString())}` : "Offline");
    banner(`Could not refresh the fleet state: ${e.message}`, "error", { key: "poll" });
  }
}

poll(refresh, 2000);
