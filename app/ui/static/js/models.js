// Models: the union of the fleet's models, pulls with live per-node
// progress (NDJSON read as it streams) and deletes.
import { $, h, api, banner, initPage, isAdmin, confirmDialog, fmtBytes, fmtTime, emptyRow, chips } from "./lib.js";

const me = await initPage();
const admin = isAdmin(me);

const SUGGESTIONS = ["llama3.2:3b", "llama3.1:8b", "qwen2.5:7b", "gemma3:4b", "mistral:7b", "nomic-embed-text", "embeddinggemma:300m", "gpt-oss:20b"];
$("#model-suggestions").replaceChildren(...SUGGESTIONS.map((s) => h("option", { value: s })));

let nodes = [];
const form = $("#pull-form");
form.hidden = !admin;

async function loadNodes() {
  try {
    const st = await api("GET", "/api/proxy/state");
    nodes = st.nodes || [];
  } catch (e) {
    nodes = [];
    banner(`Could not read the nodes: ${e.message}`, "error", { key: "nodes" });
  }
  const sel = $("#pull-target");
  const keep = sel.value;
  sel.replaceChildren(h("option", { value: "", text: "All enabled nodes" }),
    ...nodes.map((n) => h("option", { value: String(n.id), disabled: !n.enabled, text: n.enabled ? n.name : `${n.name} (disabled)` })));
  sel.value = keep;
}

async function loadModels() {
  let models = null;
  try {
    const data = await api("GET", "/api/tags");
    models = data.models || [];
  } catch (e) {
    banner(`Could not list the models: ${e.message}`, "error", { key: "models" });
  }
  if (models === null) {
    // Fall back to the names the state reports.
    const names = [...new Set(nodes.flatMap((n) => n.models || []))];
    models = names.map((name) => ({ name }));
  }
  models.sort((a, b) => a.name.localeCompare(b.name));
  const body = $("#models-body");
  if (models.length === 0) {
    body.replaceChildren(emptyRow(7, "No models on any node yet. Pull one above."));
    return;
  }
  body.replaceChildren(...models.map((m) => {
    const d = m.details || {};
    const on = nodes.filter((n) => (n.models || []).includes(m.name) || (n.models || []).includes(m.model));
    return h("tr", { data: { model: m.name } },
      h("td", {}, h("div", { class: "mono", text: m.name }), m.modified_at ? h("div", { class: "muted small", text: `Modified ${fmtTime(m.modified_at)}` }) : null),
      h("td", { text: d.family || "–" }),
      h("td", { text: d.parameter_size || "–" }),
      h("td", { text: d.quantization_level || "–" }),
      h("td", { class: "num", text: m.size ? fmtBytes(m.size) : "–" }),
      h("td", {}, chips(on.map((n) => n.name), { empty: "–" })),
      h("td", { class: "actions" }, admin
        ? h("button", { class: "btn btn-ghost btn-sm btn-danger-text", type: "button", text: "Delete", on: { click: (e) => remove(m.name, e.currentTarget) } })
        : null));
  }));
}

async function reload() {
  await loadNodes();
  await loadModels();
}

async function remove(name, button) {
  const ok = await confirmDialog({
    title: "Delete model?",
    message: `“${name}” will be deleted from every node that is up and has it, disabled ones included; a node that is down keeps its copy. Clients asking for it will get “model not found”.`,
    confirm: "Delete model",
    danger: true,
  });
  if (!ok) return;
  // Busy until the nodes answer: a second click would only get "not found".
  const label = button ? button.textContent : "";
  if (button) { button.disabled = true; button.textContent = "Deleting…"; }
  try {
    await api("DELETE", "/api/delete", { model: name });
    banner(`Model “${name}” deleted.`, "success");
  } catch (e) {
    banner(`Could not delete “${name}”: ${e.message}`);
  }
  if (button) { button.disabled = false; button.textContent = label; }
  await reload();
}

// ---- pull -------------------------------------------------------------------

// progressRow shows one node's pull: status text, a bar and the bytes.
function progressRow(key, name) {
  const bar = h("progress", { max: 100, value: 0 });
  const pct = h("span", { class: "progress-pct", text: "0%" });
  const status = h("span", { class: "progress-status", text: "waiting…" });
  const bytes = h("span", { class: "muted small progress-bytes" });
  const el = h("div", { class: "progress-row", data: { nodeId: key, state: "running" } },
    h("div", { class: "progress-head" }, h("strong", { class: "progress-node", text: name }), status),
    h("div", { class: "progress-bar" }, bar, pct),
    bytes);
  return { el, bar, pct, status, bytes, layers: new Map(), done: false, ok: false, name };
}

function update(row, msg) {
  if (msg.error) {
    row.done = true;
    row.el.dataset.state = "error";
    row.status.textContent = msg.error;
    row.status.title = msg.error;
    return;
  }
  if (msg.digest && msg.total) row.layers.set(msg.digest, { total: msg.total, completed: msg.completed || 0 });
  if (msg.status === "success") {
    row.done = row.ok = true;
    row.el.dataset.state = "success";
    row.bar.value = 100;
    row.pct.textContent = "100%";
    row.status.textContent = "Done";
    return;
  }
  let total = 0;
  let completed = 0;
  for (const l of row.layers.values()) {
    total += l.total;
    completed += Math.min(l.completed, l.total);
  }
  if (total > 0) {
    const p = Math.floor((completed / total) * 100);
    row.bar.value = p;
    row.pct.textContent = `${p}%`;
    row.bytes.textContent = `${fmtBytes(completed)} of ${fmtBytes(total)}`;
  }
  if (msg.status) row.status.textContent = msg.status;
}

async function pull(model, nodeID) {
  const box = $("#pull-progress");
  const rows = new Map();
  const rowFor = (key, name) => {
    if (!rows.has(key)) {
      const r = progressRow(key, name || `node ${key}`);
      rows.set(key, r);
      box.append(r.el);
    }
    return rows.get(key);
  };
  box.replaceChildren(h("p", { class: "progress-title" }, "Pulling ", h("strong", { class: "mono", text: model })));
  box.hidden = false;
  const targets = nodeID ? nodes.filter((n) => String(n.id) === nodeID) : nodes.filter((n) => n.enabled);
  for (const n of targets) rowFor(String(n.id), n.name);

  const req = { model, stream: true };
  if (nodeID) req.node_id = Number(nodeID);
  const res = await api("POST", "/api/proxy/pull", req, { raw: true });
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  const handle = (line) => {
    let msg;
    try { msg = JSON.parse(line); } catch { return; }
    if (msg.node_id === undefined || msg.node_id === null) {
      if (msg.error) banner(`Pull failed: ${msg.error}`);
      return;
    }
    update(rowFor(String(msg.node_id), msg.node_name), msg);
  };
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) handle(line);
    }
  }
  if (buf.trim()) handle(buf.trim());
  for (const r of rows.values()) {
    if (!r.done) update(r, { error: "the stream ended before this node finished" });
  }
  const all = [...rows.values()];
  const ok = all.filter((r) => r.ok).length;
  if (all.length && ok === all.length) banner(`Pulled “${model}” to ${ok} node${ok === 1 ? "" : "s"}.`, "success");
  else banner(`Pulled “${model}” to ${ok} of ${all.length} nodes. See the errors below.`, "error");
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const model = $("#pull-model").value.trim();
  if (!model) {
    banner("Enter a model name, e.g. llama3.2:3b.", "error", { key: "pull" });
    $("#pull-model").focus();
    return;
  }
  const btn = $("#pull-submit");
  btn.disabled = true;
  btn.textContent = "Pulling…";
  try {
    await pull(model, $("#pull-target").value);
  } catch (err) {
    banner(`Pull failed: ${err.message}`);
  } finally {
    btn.disabled = false;
    btn.textContent = "Pull";
    await reload();
  }
});

$("#models-refresh").addEventListener("click", reload);
await reload();
