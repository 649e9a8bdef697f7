// Sign in with a session cookie, or explain how to create the first admin
// when the server has no users yet.
import { $, api, initPage } from "./lib.js";

await initPage({ requireSession: false });

// next is where to go after signing in: only a path of this UI, never
// another origin ("//evil.example" or "https://…").
function next() {
  const n = new URLSearchParams(location.search).get("next") || "";
  return /^\/ui(\/[^/\\]|\/?$)/.test(n) && !n.startsWith("//") ? n : "/ui/";
}

const form = $("#login-form");
const error = $("#login-error");

function fail(msg) {
  error.textContent = msg;
  error.hidden = false;
}

// Already signed in: go on. A server without accounts needs no sign-in.
try {
  await api("GET", "/api/account/me", undefined, { redirect: false });
  location.replace(next());
} catch (e) {
  if (e.status === 404 || e.status === 501) {
    form.hidden = true;
    $("#no-accounts").hidden = false;
  }
}

async function checkSetup() {
  try {
    const setup = await api("GET", "/api/account/setup", undefined, { redirect: false });
    if (setup && setup.needs_admin) {
      $("#setup-hint").textContent = setup.hint || "aivonx users create --username admin --role admin";
      $("#setup").hidden = false;
      form.hidden = true;
    }
  } catch { /* older server: show the form */ }
}
if (!form.hidden) await checkSetup();

$("#setup-reload").addEventListener("click", () => location.reload());

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  error.hidden = true;
  const username = $("#username").value.trim();
  const password = $("#password").value;
  if (!username || !password) {
    fail("Enter your username and password.");
    return;
  }
  const btn = $("#login-submit");
  btn.disabled = true;
  try {
    await api("POST", "/api/account/session", { username, password }, { redirect: false });
    location.replace(next());
  } catch (err) {
    if (err.status === 401) fail("Invalid username or password.");
    else if (err.status === 429) fail(`Too many attempts. Try again${err.retryAfter ? ` in ${err.retryAfter} s` : " later"}.`);
    else fail(err.message);
    $("#password").select();
  } finally {
    btn.disabled = false;
  }
});
