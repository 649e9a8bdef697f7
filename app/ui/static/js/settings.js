// Settings: the routing strategy, API keys (shown once at creation) and,
// for admins, users.
import {
  $, h, api, banner, initPage, isAdmin, listOf, confirmDialog, showErrors, clearErrors, copyText,
  fmtNum, fmtTime, fmtAgo, strategyLabel, emptyRow,
} from "./lib.js";

const me = await initPage();
const admin = isAdmin(me);

// ---- routing ----------------------------------------------------------------

const configForm = $("#config-form");

async function loadConfig() {
  let cfg;
  try {
    cfg = await api("GET", "/api/proxy/config");
  } catch (e) {
    if (e.status !== 404) {
      banner(`Could not read the settings: ${e.message}`, "error", { key: "config" });
      return;
    }
    const st = await api("GET", "/api/proxy/state").catch(() => ({}));
    cfg = { strategy: st.strategy };
    $("#config-save").disabled = true;
    banner("The settings API is not available on this server: the strategy is shown read-only.", "info", { key: "config" });
  }
  if (cfg.strategy) $("#strategy").value = cfg.strategy;
  // Any other runtime settings the server reports, read-only.
  const extra = Object.entries(cfg).filter(([k, v]) => k !== "strategy" && (typeof v !== "object" || v === null));
  $("#config-extra").replaceChildren(...extra.flatMap(([k, v]) => [h("dt", { text: k.replaceAll("_", " ") }), h("dd", { class: "mono", text: String(v) })]));
}

configForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const btn = $("#config-save");
  btn.disabled = true;
  try {
    const cfg = await api("PATCH", "/api/proxy/config", { strategy: $("#strategy").value });
    banner(`Saved: requests go to the node with the ${strategyLabel((cfg && cfg.strategy) || $("#strategy").value).toLowerCase()}.`, "success");
  } catch (err) {
    banner(`Could not save: ${err.message}`);
  } finally {
    btn.disabled = false;
  }
});

// ---- API keys ---------------------------------------------------------------

const keyForm = $("#key-form");

function keyRow(k) {
  const revoked = !!k.revoked;
  return h("tr", { class: revoked ? "row-muted" : "", data: { keyId: k.id, keyName: k.name } },
    h("td", {}, h("span", { class: "key-name truncate", text: k.name, title: k.name }), revoked ? h("span", { class: "badge badge-muted", text: "revoked" }) : null),
    h("td", { class: "mono muted", text: k.prefix ? `${k.prefix}…` : "–" }),
    h("td", { class: "num", text: k.rpm_limit ? fmtNum(k.rpm_limit) : "unlimited" }),
    h("td", { class: "num key-requests", text: fmtNum(k.requests ?? 0) }),
    h("td", { class: "num", text: fmtNum(k.prompt_tokens ?? 0) }),
    h("td", { class: "num", text: fmtNum(k.completion_tokens ?? 0) }),
    h("td", { text: k.last_used_at ? fmtAgo(k.last_used_at) : "never", title: k.last_used_at ? fmtTime(k.last_used_at) : null }),
    h("td", { text: fmtTime(k.created_at) }),
    h("td", { class: "actions" }, admin && !revoked
      ? h("button", { class: "btn btn-ghost btn-sm btn-danger-text", type: "button", text: "Revoke", on: { click: () => revoke(k) } })
      : null));
}

async function loadKeys() {
  try {
    const keys = listOf(await api("GET", "/api/keys"), "keys");
    $("#keys-body").replaceChildren(...(keys.length ? keys.map(keyRow) : [emptyRow(9, "No API keys yet.")]));
  } catch (e) {
    $("#keys-body").replaceChildren(emptyRow(9, `Could not list the keys: ${e.message}`));
  }
}

async function revoke(k) {
  const ok = await confirmDialog({
    title: "Revoke API key?",
    message: `Clients using “${k.name}” will be refused from now on. This cannot be undone.`,
    confirm: "Revoke key",
    danger: true,
  });
  if (!ok) return;
  try {
    await api("DELETE", `/api/keys/${encodeURIComponent(k.id)}`);
    banner(`Key “${k.name}” revoked.`, "success");
  } catch (e) {
    banner(`Could not revoke “${k.name}”: ${e.message}`);
  }
  await loadKeys();
}

keyForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearErrors(keyForm);
  const name = $("#key-name").value.trim();
  if (!name) {
    showErrors(keyForm, { fields: { name: ["Name the key after its client, e.g. ci-bot."] } });
    return;
  }
  const req = { name };
  const rpm = $("#key-rpm").value.trim();
  if (rpm !== "") req.rpm_limit = Number(rpm);
  const btn = $("#key-create");
  btn.disabled = true;
  try {
    const k = await api("POST", "/api/keys", req);
    keyForm.reset();
    $("#new-key-value").value = k.key || "";
    $("#new-key").hidden = false;
    $("#new-key-value").select();
    await loadKeys();
  } catch (err) {
    showErrors(keyForm, err);
  } finally {
    btn.disabled = false;
  }
});

$("#new-key-copy").addEventListener("click", async () => {
  const input = $("#new-key-value");
  const btn = $("#new-key-copy");
  if (await copyText(input.value)) {
    btn.textContent = "Copied";
  } else {
    input.select();
    btn.textContent = "Press Ctrl+C";
  }
  setTimeout(() => { btn.textContent = "Copy"; }, 2000);
});

$("#new-key-done").addEventListener("click", () => {
  $("#new-key-value").value = "";
  $("#new-key").hidden = true;
});

// ---- users ------------------------------------------------------------------

const userForm = $("#user-form");

async function loadUsers() {
  try {
    const users = listOf(await api("GET", "/api/account/users"), "users");
    $("#users-body").replaceChildren(...(users.length ? users.map((u) => h("tr", { data: { userId: u.id } },
      h("td", {}, h("span", { text: u.username }), me && u.username === me.username ? h("span", { class: "badge badge-muted", text: "you" }) : null),
      h("td", {}, h("span", { class: `badge ${u.role === "admin" ? "badge-accent" : "badge-muted"}`, text: u.role })),
      h("td", { text: fmtTime(u.created_at) }),
      h("td", { class: "actions" }, me && u.username === me.username ? null
        : h("button", { class: "btn btn-ghost btn-sm btn-danger-text", type: "button", text: "Delete", on: { click: () => removeUser(u) } }))))
      : [emptyRow(4, "No users.")]));
  } catch (e) {
    $("#users-body").replaceChildren(emptyRow(4, `Could not list the users: ${e.message}`));
  }
}

async function removeUser(u) {
  const ok = await confirmDialog({ title: "Delete user?", message: `“${u.username}” will no longer be able to sign in.`, confirm: "Delete user", danger: true });
  if (!ok) return;
  try {
    await api("DELETE", `/api/account/users/${encodeURIComponent(u.id)}`);
    banner(`User “${u.username}” deleted.`, "success");
  } catch (e) {
    banner(`Could not delete “${u.username}”: ${e.message}`);
  }
  await loadUsers();
}

userForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearErrors(userForm);
  const req = { username: $("#user-name").value.trim(), password: $("#user-password").value, role: $("#user-role").value };
  const missing = {};
  if (!req.username) missing.username = ["Enter a username."];
  if (!req.password) missing.password = ["Enter a password."];
  if (Object.keys(missing).length) {
    showErrors(userForm, { fields: missing });
    return;
  }
  const btn = $("#user-create");
  btn.disabled = true;
  try {
    await api("POST", "/api/account/users", req);
    userForm.reset();
    banner(`User “${req.username}” created.`, "success");
    await loadUsers();
  } catch (err) {
    showErrors(userForm, err);
  } finally {
    btn.disabled = false;
  }
});

// ---- start ------------------------------------------------------------------

if (!admin) {
  configForm.querySelector("select").disabled = true;
  $("#config-save").hidden = true;
  keyForm.hidden = true;
}
// API keys and users are an admin's: the API answers a viewer 403.
$("#keys-section").hidden = !admin;
$("#users-section").hidden = !admin || !me;
await Promise.all([loadConfig(), admin ? loadKeys() : null, admin && me ? loadUsers() : null]);
