// Shared helpers of the Aivonx UI.
//
// Every piece of text that comes from the server (node names, model names,
// log lines, error messages) reaches the page through textContent or
// attribute setters, never through innerHTML: ui_test.go fails the build if
// any script uses an HTML-parsing sink.

// h builds an element. props: class, text, and any DOM property or
// attribute; "on" maps event names to handlers, "data" fills dataset.
// Children may be nodes, strings (added as text), arrays, or null/false.
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = String(v);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);

// ApiError is a failed API call: status 0 when the server was unreachable.
export class ApiError extends Error {
  constructor(status, message, fields) {
    super(message);
    this.status = status;
    this.fields = fields || null;
  }
}

function errorMessage(status, data, text) {
  if (data && typeof data === "object") {
    if (typeof data.detail === "string") return data.detail;
    if (typeof data.error === "string") return data.error;
    if (data.error && typeof data.error.message === "string") return data.error.message;
  }
  switch (status) {
    case 401: return "Your session has ended. Sign in again.";
    case 403: return "You are not allowed to do this (admins only).";
    case 404: return "This feature is not available on this server yet.";
    case 501: return "This feature is not configured on this server.";
    case 429: return "Too many requests. Wait a moment and try again.";
  }
  if (status >= 500) return `The server failed (${status}). Check the logs.`;
  return (text || "").trim().slice(0, 200) || `Request failed (${status}).`;
}

// api calls the JSON API with the session cookie and returns the decoded
// body (null for 204). It throws ApiError. A 401 sends the browser to the
// login page unless opts.redirect is false.
export async function api(method, path, body, opts = {}) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin", signal: opts.signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "Cannot reach the server.");
  }
  if (opts.raw) {
    if (res.ok) return res;
  }
  if (res.status === 401 && opts.redirect !== false) goLogin();
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!res.ok) {
    const err = new ApiError(res.status, errorMessage(res.status, data, text), data && data.errors);
    err.retryAfter = Number(res.headers.get("Retry-After")) || 0;
    throw err;
  }
  return data;
}

// listOf finds the array in a list response: a bare array, or one wrapped
// as {results|keys|users|items|data: [...]}.
export function listOf(data, ...keys) {
  if (Array.isArray(data)) return data;
  for (const k of [...keys, "results", "items", "data"]) {
    if (data && Array.isArray(data[k])) return data[k];
  }
  return [];
}

let redirecting = false;
export function goLogin() {
  if (redirecting) return;
  redirecting = true;
  const next = location.pathname + location.search;
  location.assign("/ui/login?next=" + encodeURIComponent(next));
}

// ---- theme ----------------------------------------------------------------

const darkQuery = matchMedia("(prefers-color-scheme: dark)");

export function theme() {
  return document.documentElement.dataset.theme || (darkQuery.matches ? "dark" : "light");
}

function setupTheme() {
  const apply = () => {
    let saved = null;
    try { saved = localStorage.getItem("aivonx-theme"); } catch { /* ignore */ }
    document.documentElement.dataset.theme = saved === "light" || saved === "dark" ? saved : darkQuery.matches ? "dark" : "light";
  };
  apply();
  // Follow the system while the user has made no choice.
  darkQuery.addEventListener("change", apply);
  for (const btn of document.querySelectorAll("#theme-toggle")) {
    btn.addEventListener("click", () => {
      const next = theme() === "dark" ? "light" : "dark";
      document.documentElement.dataset.theme = next;
      try { localStorage.setItem("aivonx-theme", next); } catch { /* ignore */ }
    });
  }
}

// ---- page setup -----------------------------------------------------------

// initPage wires the header (theme, user, sign out) and returns the signed
// in user ({username, role}), or null when this server has no accounts API.
// Without a session it sends the browser to the login page.
export async function initPage({ requireSession = true } = {}) {
  setupTheme();
  if (!requireSession) return null;
  let me = null;
  try {
    me = await api("GET", "/api/account/me");
  } catch (e) {
    if (e.status === 401) return new Promise(() => {}); // redirecting
    // 404/501: this server has no accounts (yet), so there is no session.
    if (e.status !== 404 && e.status !== 501) banner(`Could not read your session: ${e.message}`);
  }
  const who = $("#whoami");
  const out = $("#logout");
  if (me && who) {
    who.replaceChildren(h("span", { class: "whoami-name", text: me.username }), h("span", { class: "badge badge-muted", text: me.role }));
    who.hidden = false;
  }
  if (out) {
    out.hidden = !me;
    out.addEventListener("click", async () => {
      out.disabled = true;
      try {
        await api("POST", "/api/account/logout", undefined, { redirect: false });
      } catch (e) {
        if (e.status !== 401) { banner(`Sign out failed: ${e.message}`); out.disabled = false; return; }
      }
      location.assign("/ui/login");
    });
  }
  document.body.classList.toggle("is-admin", !me || me.role === "admin");
  return me;
}

export function isAdmin(me) { return !me || me.role === "admin"; }

// ---- banners --------------------------------------------------------------

// banner shows a message at the top of the page. A key replaces the earlier
// banner with the same key instead of stacking (for polling errors).
export function banner(message, kind = "error", { key, timeout } = {}) {
  const box = $("#banners");
  if (!box) return;
  if (key) clearBanner(key);
  const el = h("div", { class: `banner banner-${kind}`, role: kind === "error" ? "alert" : "status", data: key ? { key } : {} },
    h("span", { class: "banner-text", text: message }),
    h("button", { class: "banner-close", type: "button", "aria-label": "Dismiss", text: "×", on: { click: () => el.remove() } }));
  box.append(el);
  if (timeout || kind === "success") setTimeout(() => el.remove(), timeout || 5000);
  return el;
}

export function clearBanner(key) {
  for (const el of document.querySelectorAll("#banners .banner")) {
    if (el.dataset.key === key) el.remove();
  }
}

// ---- dialogs --------------------------------------------------------------

// setupDialog makes [data-close] buttons and a click on the backdrop close
// the dialog.
export function setupDialog(dialog) {
  dialog.addEventListener("click", (e) => {
    if (e.target === dialog || e.target.closest("[data-close]")) dialog.close("cancel");
  });
  return dialog;
}

// confirmDialog asks a yes/no question in a modal and resolves to true on
// confirmation. (window.confirm is not used: it blocks the page.)
export function confirmDialog({ title, message, confirm = "Confirm", danger = false }) {
  return new Promise((resolve) => {
    const ok = h("button", { class: `btn ${danger ? "btn-danger" : "btn-primary"}`, type: "button", text: confirm, data: { confirm: "" } });
    const dlg = h("dialog", { class: "dialog dialog-confirm" },
      h("div", { class: "dialog-body" },
        h("h2", { text: title }),
        h("p", { text: message }),
        h("div", { class: "dialog-actions" },
          h("button", { class: "btn btn-ghost", type: "button", text: "Cancel", data: { close: "" } }),
          ok)));
    setupDialog(dlg);
    ok.addEventListener("click", () => dlg.close("ok"));
    dlg.addEventListener("close", () => { resolve(dlg.returnValue === "ok"); dlg.remove(); });
    document.body.append(dlg);
    dlg.showModal();
    ok.focus();
  });
}

// ---- forms ----------------------------------------------------------------

// showErrors puts field errors ({field: ["msg"]}) under the matching inputs
// and anything else in the form's .form-error. It returns whether any field
// error was shown.
export function showErrors(form, err) {
  clearErrors(form);
  let shown = false;
  if (err && err.fields) {
    for (const [field, msgs] of Object.entries(err.fields)) {
      const slot = form.querySelector(`.field-error[data-for="${CSS.escape(field)}"]`);
      if (slot) {
        slot.textContent = [].concat(msgs).join(" ");
        shown = true;
      }
    }
  }
  const top = form.querySelector(".form-error");
  if (!shown && err) {
    const msg = err.message || "Check the form and try again.";
    if (top) { top.textContent = msg; top.hidden = false; } else banner(msg);
  }
  return shown;
}

export function clearErrors(form) {
  for (const s of form.querySelectorAll(".field-error")) s.textContent = "";
  const top = form.querySelector(".form-error");
  if (top) { top.textContent = ""; top.hidden = true; }
}

// ---- formatting -----------------------------------------------------------

export function fmtBytes(n) {
  if (typeof n !== "number" || !isFinite(n) || n < 0) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

export function fmtMs(ms) {
  if (typeof ms !== "number" || !isFinite(ms)) return "–";
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function fmtNum(n) {
  return typeof n === "number" && isFinite(n) ? n.toLocaleString() : "–";
}

// toLocalInput turns an RFC 3339 time into a datetime-local value.
export function toLocalInput(iso) {
  const d = iso ? new Date(iso) : null;
  if (!d || isNaN(d)) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

// fromLocalInput turns a datetime-local value (the browser's time zone)
// into RFC 3339 in UTC. An end bound covers the whole second it shows
// (.999): "to 16:29:47" includes what happened at 16:29:47.5.
export function fromLocalInput(v, { end = false } = {}) {
  if (!v) return "";
  const d = new Date(v);
  if (isNaN(d)) return "";
  if (end) d.setMilliseconds(999);
  return d.toISOString();
}

// setSelect shows value in a <select>: the option of that value, one that
// differs only in case ("warn" for "WARN"), or a new option for a value
// the list lacks (a shared link's "?status=502"), so that a filter from the
// address is never dropped.
export function setSelect(sel, value) {
  sel.value = value || "";
  if (!value || sel.value === value) return;
  const same = [...sel.options].find((o) => o.value.toLowerCase() === value.toLowerCase());
  if (same) {
    sel.value = same.value;
    return;
  }
  sel.append(h("option", { value, text: value }));
  sel.value = value;
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function fmtAgo(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return fmtTime(iso);
}

export const strategyLabel = (s) => ({ least_active: "Least active", lowest_latency: "Lowest latency" })[s] || s || "–";

// statusBadge shows a node's state: active, standby or disabled.
export function statusBadge(status, title) {
  const kind = { active: "ok", standby: "warn", disabled: "muted" }[status] || "muted";
  const label = { active: "Healthy", standby: "Unhealthy", disabled: "Disabled" }[status] || status || "unknown";
  return h("span", { class: `badge badge-${kind}`, title: title || null, data: { status: status || "" } }, h("span", { class: "badge-dot" }), label);
}

export function chips(names, { empty = "none", highlight } = {}) {
  if (!names || names.length === 0) return h("span", { class: "muted", text: empty });
  return h("div", { class: "chips" }, names.map((n) => h("span", { class: `chip${highlight && highlight.has(n) ? " chip-accent" : ""}`, text: n, title: n })));
}

// emptyRow is a table row saying there is nothing to show.
export function emptyRow(cols, text) {
  return h("tr", { class: "empty" }, h("td", { colSpan: cols, text }));
}

// pager renders "a–b of N" with previous/next buttons.
export function pager(box, { offset, limit, count, shown, hasMore, onPage }) {
  const total = typeof count === "number" ? count : null;
  const more = hasMore ?? (total !== null ? offset + shown < total : shown === limit);
  // With hasMore, count may only be the matches up to this page.
  let of = "";
  if (hasMore === true) of = " · more available";
  else if (total !== null) of = ` of ${total.toLocaleString()}`;
  const label = shown === 0 ? "Nothing to show" : `${offset + 1}–${offset + shown}${of}`;
  box.replaceChildren(
    h("span", { class: "muted", text: label }),
    h("div", { class: "pager-buttons" },
      h("button", { class: "btn btn-ghost btn-sm", type: "button", text: "Previous", disabled: offset <= 0, on: { click: () => onPage(Math.max(0, offset - limit)) } }),
      h("button", { class: "btn btn-ghost btn-sm", type: "button", text: "Next", disabled: !more, on: { click: () => onPage(offset + limit) } })));
}

// poll runs fn now and then every ms, one run at a time, pausing while the
// tab is hidden and catching up as soon as it is shown again.
export function poll(fn, ms) {
  let timer = null;
  let running = false;
  const run = async () => {
    clearTimeout(timer);
    if (running) return;
    if (!document.hidden) {
      running = true;
      try { await fn(); } finally { running = false; }
    }
    timer = setTimeout(run, ms);
  };
  document.addEventListener("visibilitychange", () => { if (!document.hidden) run(); });
  run();
  return { now: run };
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false; // plain HTTP on a remote host has no clipboard API
  }
}
