// Nodes: add, edit, drain (disable), delete and inspect the Ollama nodes.
import {
  $, h, api, banner, clearBanner, initPage, isAdmin, poll, setupDialog, confirmDialog, showErrors, clearErrors,
  fmtMs, fmtTime, fmtAgo, statusBadge, chips, emptyRow, pager,
} from "./lib.js";

const me = await initPage();
const admin = isAdmin(me);

const body = $("#nodes-body");
const dialog = setupDialog($("#node-dialog"));
const form = $("#node-form");
const details = setupDialog($("#details-dialog"));
const limit = 50;
let offset = 0;
let editing = null; // node being edited, null when adding
let readOnly = false; // the management API is missing: show /api/proxy/state
let lastSig = "";

$("#add-node").hidden = !admin;

// node state: "disabled" by the admin, else what the health checks saw.
function stateOf(n) {
  if (!n.enabled) return "disabled";
  return n.status && n.status.healthy ? "active" : "standby";
}

// fromState turns an /api/proxy/state node into the nodes API's shape.
function fromState(n) {
  return {
    id: n.id, name: n.name, base_url: n.address, enabled: n.enabled,
    status: {
      healthy: n.healthy, state: n.status, latency_ms: n.latency_ms, models: n.models, loaded_models: n.loaded_models,
      version: n.version, last_check: n.last_check, reason: n.reason, active_requests: n.active_requests,
    },
  };
}

function row(n) {
  const st = n.status || {};
  const state = stateOf(n);
  const actions = admin && !readOnly
    ? [
      h("button", { class: "btn btn-ghost btn-sm", type: "button", text: "Edit", on: { click: () => openEdit(n) } }),
      h("button", { class: "btn btn-ghost btn-sm", type: "button", text: n.enabled ? "Disable" : "Enable", data: { action: "toggle" },
        title: n.enabled ? "Drain: stop sending new requests to this node" : "Send requests to this node again",
        on: { click: () => toggle(n) } }),
      h("button", { class: "btn btn-ghost btn-sm btn-danger-text", type: "button", text: "Delete", data: { action: "delete" }, on: { click: () => remove(n) } }),
    ]
    : [];
  return h("tr", { data: { nodeId: n.id, status: state } },
    h("td", {}, h("button", { class: "link node-name", type: "button", text: n.name, title: `${n.name}: details`, on: { click: () => showDetails(n) } })),
    h("td", { class: "mono muted truncate", text: n.base_url, title: n.base_url }),
    h("td", {}, statusBadge(state, st.reason), state === "standby" && st.reason ? h("div", { class: "muted small truncate", text: st.reason, title: st.reason }) : null),
    h("td", { class: "num", text: fmtMs(st.latency_ms), data: { cell: "latency" } }),
    h("td", { class: "num", text: String(st.active_requests ?? 0), data: { cell: "active" } }),
    h("td", { class: "num", text: String((st.models || []).length) }),
    h("td", { class: "actions" }, h("button", { class: "btn btn-ghost btn-sm", type: "button", text: "Details", on: { click: () => showDetails(n) } }), actions));
}

async function load() {
  let nodes;
  let count = null;
  try {
    const data = await api("GET", `/api/proxy/nodes?limit=${limit}&offset=${offset}`);
    nodes = Array.isArray(data) ? data : data.results || [];
    count = typeof data.count === "number" ? data.count : null;
    readOnly = false;
  } catch (e) {
    if (e.status !== 404) {
      banner(`Could not load the nodes: ${e.message}`, "error", { key: "load" });
      return;
    }
    // No management API on this server (yet): show the fleet read-only.
    const st = await api("GET", "/api/proxy/state").catch(() => ({ nodes: [] }));
    nodes = (st.nodes || []).map(fromState);
    count = nodes.length;
    readOnly = true;
    banner("The node management API is not available on this server: nodes are shown read-only.", "info", { key: "load" });
  }
  if (!readOnly) clearBanner("load");
  if (!nodes.length && offset > 0) {
    // This page emptied (its last nodes deleted): show the one before.
    offset = Math.max(0, offset - limit);
    return load();
  }
  $("#add-node").disabled = readOnly;
  // Redraw only what changed, so a poll does not replace a row under the
  // pointer, or the keyboard focus, for nothing. Latency and in-flight
  // counts change on every poll: their cells are updated in place.
  const sig = JSON.stringify([readOnly, offset, nodes.map((n) => ({ ...n, status: { ...(n.status || {}), last_check: null, latency_ms: null, active_requests: null } }))]);
  if (sig === lastSig) {
    for (const n of nodes) {
      const tr = body.querySelector(`tr[data-node-id="${CSS.escape(String(n.id))}"]`);
      if (!tr) continue;
      tr.querySelector('[data-cell="latency"]').textContent = fmtMs(n.status?.latency_ms);
      tr.querySelector('[data-cell="active"]').textContent = String(n.status?.active_requests ?? 0);
    }
    return;
  }
  lastSig = sig;
  body.replaceChildren(...(nodes.length ? nodes.map(row) : [emptyRow(7, "No nodes configured. Add the first Ollama server.")]));
  pager($("#pager"), { offset, limit, count, shown: nodes.length, onPage: (o) => { offset = o; load(); } });
}

function openAdd() {
  editing = null;
  form.reset();
  clearErrors(form);
  $("#node-dialog-title").textContent = "Add node";
  $("#node-enabled").checked = true;
  dialog.showModal();
  $("#node-name").focus();
}

function openEdit(n) {
  editing = n;
  form.reset();
  clearErrors(form);
  $("#node-dialog-title").textContent = `Edit ${n.name}`;
  $("#node-name").value = n.name;
  $("#node-url").value = n.base_url;
  $("#node-enabled").checked = n.enabled;
  dialog.showModal();
  $("#node-name").focus();
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearErrors(form);
  const payload = { name: $("#node-name").value.trim(), base_url: $("#node-url").value.trim(), enabled: $("#node-enabled").checked };
  const missing = {};
  if (!payload.name) missing.name = ["Enter a name."];
  if (!payload.base_url) missing.base_url = ["Enter the node's URL, e.g. http://10.0.0.5:11434."];
  if (Object.keys(missing).length) {
    showErrors(form, { fields: missing, message: "" });
    return;
  }
  const save = $("#node-save");
  save.disabled = true;
  try {
    if (editing) {
      // A name left as it was is not sent: one the server derived from the
      // URL (host:port) then follows a new URL, as the API does.
      const patch = { ...payload };
      if (patch.name === editing.name) delete patch.name;
      await api("PATCH", `/api/proxy/nodes/${encodeURIComponent(editing.id)}`, patch);
      banner(`Node “${payload.name}” saved.`, "success");
    } else {
      await api("POST", "/api/proxy/nodes", payload);
      banner(`Node “${payload.name}” added. It receives traffic once a health check passes.`, "success");
    }
    dialog.close();
    lastSig = "";
    await load();
  } catch (err) {
    if (err.status === 409 && !err.fields) err.fields = { base_url: [err.message || "A node with this URL already exists."] };
    showErrors(form, err);
  } finally {
    save.disabled = false;
  }
});

async function toggle(n) {
  try {
    await api("PATCH", `/api/proxy/nodes/${encodeURIComponent(n.id)}`, { enabled: !n.enabled });
    banner(n.enabled ? `Node “${n.name}” disabled: it gets no new requests; running ones finish.` : `Node “${n.name}” enabled.`, "success");
    await load();
  } catch (e) {
    banner(`Could not change “${n.name}”: ${e.message}`);
  }
}

async function remove(n) {
  const ok = await confirmDialog({
    title: "Delete node?",
    message: `“${n.name}” (${n.base_url}) will be removed from the fleet. Requests running on it finish; its models stay on the server.`,
    confirm: "Delete node",
    danger: true,
  });
  if (!ok) return;
  try {
    await api("DELETE", `/api/proxy/nodes/${encodeURIComponent(n.id)}`);
    banner(`Node “${n.name}” deleted.`, "success");
    await load();
  } catch (e) {
    banner(`Could not delete “${n.name}”: ${e.message}`);
  }
}

function showDetails(n) {
  const st = n.status || {};
  const item = (label, value) => [h("dt", { text: label }), h("dd", {}, value instanceof Node ? value : h("span", { text: value ?? "–" }))];
  $("#details-title").textContent = n.name;
  $("#details-list").replaceChildren(
    ...item("ID", String(n.id)),
    ...item("Base URL", h("span", { class: "mono", text: n.base_url })),
    ...item("Status", statusBadge(stateOf(n), st.reason)),
    ...item("Enabled", n.enabled ? "yes" : "no (drained)"),
    ...(st.reason ? item("Reason", st.reason) : []),
    ...item("Latency", fmtMs(st.latency_ms)),
    ...item("Active requests", String(st.active_requests ?? 0)),
    ...item("Ollama version", st.version || "–"),
    ...item("Last check", st.last_check ? `${fmtTime(st.last_check)} (${fmtAgo(st.last_check)})` : "never"),
    ...(n.created_at ? item("Created", fmtTime(n.created_at)) : []),
    ...(n.updated_at ? item("Updated", fmtTime(n.updated_at)) : []),
    ...item("Models", chips(st.models, { empty: "No models" })),
    ...item("Loaded", chips(st.loaded_models, { empty: "Nothing loaded" })),
  );
  details.showModal();
}

$("#add-node").addEventListener("click", openAdd);

// Keep the status column current, but never redraw under an open dialog.
poll(async () => {
  if (document.querySelector("dialog[open]")) return;
  await load();
}, 3000);
