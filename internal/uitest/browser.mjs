// Drives the Aivonx web UI in headless Chromium. Started by browser_test.go,
// which passes the server URL, the admin password and the fake nodes' URLs
// in the environment. Each step prints one JSON line on stdout
// ({"step","ok","ms","error"}); the API key read from the page is printed as
// {"key"} and the Go side answers on stdin once it has used it.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const env = process.env;
const BASE = env.AIVONX_URL;
const ART = env.ARTIFACTS;
const XSS = "<img src=x onerror=alert(1)>";
const PULL_MODEL = "qwen2.5:0.5b";

const emit = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// Ignore Chromium's own "failed to load resource" lines: an expected 401
// (not signed in yet) is one.
const problems = [];
const dialogs = [];

const profile = mkdtempSync(join(tmpdir(), "aivonx-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1280, height: 860 },
  colorScheme: "light",
  locale: "en-US",
  timezoneId: "UTC",
});
context.setDefaultTimeout(10000);
const page = context.pages()[0] || (await context.newPage());
page.on("dialog", async (d) => {
  dialogs.push(`${d.type()}: ${d.message()}`);
  await d.dismiss().catch(() => {});
});
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => {
  if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console: ${m.text()}`);
});

let failures = 0;
let shot = 0;

async function screenshot(name, p = page) {
  shot++;
  await p.screenshot({ path: join(ART, `${String(shot).padStart(2, "0")}-${name}.png`), fullPage: true });
}

class Abort extends Error {}

// step runs fn and reports it. A critical step that fails ends the run.
async function step(name, fn, { critical = false } = {}) {
  const t0 = Date.now();
  try {
    await fn();
    emit({ step: name, ok: true, ms: Date.now() - t0 });
  } catch (e) {
    failures++;
    emit({ step: name, ok: false, ms: Date.now() - t0, error: String(e && e.message ? e.message : e).split("\n").slice(0, 4).join(" | ") });
    await page.screenshot({ path: join(ART, `fail-${name}.png`), fullPage: true }).catch(() => {});
    if (critical) throw new Abort(name);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// addNode fills the node dialog on the nodes page.
async function addNode(name, url) {
  await page.goto(`${BASE}/ui/nodes`);
  await page.click("#add-node");
  await page.fill("#node-name", name);
  await page.fill("#node-url", url);
  await page.click("#node-save");
  await page.locator("#node-dialog").waitFor({ state: "hidden" });
  await page.locator("#nodes-body .node-name", { hasText: name }).first().waitFor();
}

try {
  await step("login", async () => {
    await page.goto(`${BASE}/ui/`);
    await page.waitForURL(/\/ui\/login\?next=/);
    await page.locator("#login-form").waitFor();
    await screenshot("login");
    // A wrong password is refused with a message.
    await page.fill("#username", env.AIVONX_USER);
    await page.fill("#password", "wrong-password");
    await page.click("#login-submit");
    await page.locator("#login-error").waitFor();
    await page.fill("#password", env.AIVONX_PASSWORD);
    await page.click("#login-submit");
    await page.waitForURL(`${BASE}/ui/`);
    await page.locator("#whoami").waitFor();
  }, { critical: true });

  await step("dashboard", async () => {
    await page.waitForFunction(() => document.querySelector(".node-card[data-status=active]"), null, { timeout: 10000 });
    await page.locator("#models-body tr", { hasText: "llama3:latest" }).waitFor();
    await screenshot("dashboard");
  });

  // The dashboard is open in a second tab before the node exists: it must
  // show the node appear and turn healthy by itself.
  const dash = await context.newPage();
  const seen = [];
  await step("add-node", async () => {
    await dash.goto(`${BASE}/ui/`);
    await dash.locator(".node-card").first().waitFor();
    await dash.evaluate(() => { window.__noReload = true; });
    // Headless Chromium paints only the front tab: without this, every
    // click on the other tab waits a second for a frame.
    await page.bringToFront();
    await addNode("gpu-02", env.NODE2_URL);
    await screenshot("nodes");
  });

  await step("node-healthy", async () => {
    const deadline = Date.now() + 15000;
    for (;;) {
      const st = await dash.evaluate(() => {
        const card = [...document.querySelectorAll(".node-card")].find((c) => c.querySelector(".node-name")?.textContent === "gpu-02");
        return card ? card.dataset.status : "absent";
      });
      if (seen[seen.length - 1] !== st) seen.push(st);
      if (st === "active") break;
      assert(Date.now() < deadline, `gpu-02 never turned healthy on the dashboard: ${seen.join(" → ")}`);
      await dash.waitForTimeout(100);
    }
    assert(await dash.evaluate(() => window.__noReload === true), "the dashboard reloaded instead of updating in place");
    emit({ note: `gpu-02 on the open dashboard: ${seen.join(" → ")}` });
    await dash.bringToFront();
    await screenshot("dashboard-two-nodes", dash);
    await dash.close();
    await page.bringToFront();
  });

  // Latency changes with every health check (each second here): the
  // page's polls must not redraw the row under the keyboard focus.
  await step("nodes-keep-focus", async () => {
    await page.goto(`${BASE}/ui/nodes`);
    const name = page.locator("#nodes-body tr .node-name").first();
    await name.waitFor();
    await name.focus();
    await page.evaluate(() => document.activeElement.setAttribute("data-focused", "1"));
    await page.waitForTimeout(6500); // two polls
    const kept = await page.evaluate(() => document.activeElement && document.activeElement.getAttribute("data-focused") === "1");
    assert(kept, "the keyboard focus was lost to a redraw");
  });

  await step("pull", async () => {
    await page.goto(`${BASE}/ui/models`);
    await page.locator("#pull-target option", { hasText: "gpu-02" }).waitFor({ state: "attached" });
    await page.fill("#pull-model", PULL_MODEL);
    await page.selectOption("#pull-target", "");
    await page.click("#pull-submit");
    // Mid-way: at least one bar between 0 and 100 (best effort, for the picture).
    await page.waitForFunction(() => [...document.querySelectorAll(".progress-row progress")].some((p) => p.value > 0 && p.value < 100), null, { timeout: 5000 })
      .then(() => screenshot("pull-progress"))
      .catch(() => emit({ note: "no intermediate progress seen (the pull was too fast to catch)" }));
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll(".progress-row")];
      return rows.length >= 2 && rows.every((r) => r.dataset.state !== "running");
    }, null, { timeout: 20000 });
    const rows = await page.$$eval(".progress-row", (rs) => rs.map((r) => ({
      node: r.querySelector(".progress-node").textContent, state: r.dataset.state,
      pct: r.querySelector(".progress-pct").textContent, status: r.querySelector(".progress-status").textContent,
    })));
    const bad = rows.filter((r) => r.state !== "success" || r.pct !== "100%");
    assert(bad.length === 0, `pull did not reach 100% everywhere: ${JSON.stringify(bad)}`);
    await page.locator("#models-body tr", { hasText: PULL_MODEL }).waitFor({ timeout: 10000 });
    await screenshot("models");
  });

  let keyOK = false;
  await step("api-key-create", async () => {
    await page.goto(`${BASE}/ui/settings`);
    await page.fill("#key-name", "browser-test");
    await page.fill("#key-rpm", "60");
    await page.click("#key-create");
    await page.locator("#new-key").waitFor();
    const key = await page.inputValue("#new-key-value");
    assert(key.length >= 16, `the page shows no usable key: ${JSON.stringify(key)}`);
    await page.locator("#keys-body tr[data-key-name=browser-test]").waitFor();
    await screenshot("settings-new-key");
    emit({ key });
    const { value } = await lines.next();
    assert(value === "ok", `the Go side could not use the key: ${value}`);
    keyOK = true;
  });

  await step("api-key-usage", async () => {
    assert(keyOK, "no key was used");
    // Usage is written in batches: reload until the request shows.
    const deadline = Date.now() + 10000;
    for (;;) {
      await page.goto(`${BASE}/ui/settings`);
      const row = page.locator("#keys-body tr[data-key-name=browser-test]");
      await row.waitFor();
      const n = Number((await row.locator(".key-requests").textContent()).replace(/\D/g, ""));
      if (n >= 1) break;
      assert(Date.now() < deadline, `usage still shows ${n} requests for the key`);
      await page.waitForTimeout(1000);
    }
    await screenshot("settings");
  });

  await step("requests", async () => {
    assert(keyOK, "no key was used");
    // The request log is written in batches: reload until the chat shows.
    const chat = () => page.locator("#requests-body tr.req-row", { hasText: "/api/chat" }).filter({ hasText: "key:browser-test" });
    const deadline = Date.now() + 10000;
    for (;;) {
      await page.goto(`${BASE}/ui/requests`);
      await page.waitForFunction(() => {
        const first = document.querySelector("#requests-body tr");
        return first && first.textContent !== "Loading…";
      });
      if ((await chat().count()) > 0) break;
      assert(Date.now() < deadline, `the API key's chat is not in the request history: ${await page.textContent("#requests-body")}`);
      await page.waitForTimeout(500);
    }
    const r = chat().first();
    assert((await r.getAttribute("data-status")) === "200", `status ${await r.getAttribute("data-status")}, want 200`);
    assert((await r.locator("[data-filter=model]").textContent()) === "llama3:latest", "model not shown");
    assert(((await r.locator("[data-filter=node]").textContent()) || "").length > 0, "node not shown");
    const tok = await r.locator("td.num").nth(1).textContent();
    assert(/\d+\s*\/\s*\d+/.test(tok), `tokens not shown: ${JSON.stringify(tok)}`);
    await screenshot("requests");
    // A click on the key filters the list by it.
    await r.locator("[data-filter=who]").click();
    await page.waitForURL(/who=key%3Abrowser-test/);
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll("#requests-body tr.req-row")];
      return rows.length > 0 && rows.every((tr) => tr.querySelector("[data-filter=who]")?.textContent === "key:browser-test");
    });
    assert((await page.inputValue("#req-who")) === "key:browser-test", "the who filter was not filled in");
    // Auto-refresh shows that it is live.
    await page.check("#req-auto");
    await page.locator("#req-live").waitFor();
    await page.uncheck("#req-auto");
    // A shared link's filters are kept, even a value the lists lack.
    await page.goto(`${BASE}/ui/requests?status=502&limit=10`);
    await page.waitForFunction(() => {
      const first = document.querySelector("#requests-body tr");
      return first && first.textContent !== "Loading…";
    });
    assert((await page.inputValue("#req-status")) === "502", `status filter ${await page.inputValue("#req-status")}`);
    assert((await page.inputValue("#req-limit")) === "10", `limit ${await page.inputValue("#req-limit")}`);
    assert(/status=502/.test(page.url()) && /limit=10/.test(page.url()), `the address lost its filters: ${page.url()}`);
  });

  await step("xss-node-name", async () => {
    await addNode(XSS, env.NODE3_URL);
    const names = await page.$$eval("#nodes-body .node-name", (els) => els.map((e) => e.textContent));
    assert(names.includes(XSS), `node name not shown as text: ${JSON.stringify(names)}`);
    assert((await page.locator("#nodes-body img").count()) === 0, "an <img> element was injected into the nodes table");
    // The details dialog shows it as text too.
    await page.locator("#nodes-body .node-name", { hasText: XSS }).first().click();
    await page.locator("#details-dialog").waitFor();
    assert((await page.textContent("#details-title")) === XSS, "details title is not the literal name");
    await screenshot("nodes-xss-details");
    await page.keyboard.press("Escape");
    await page.goto(`${BASE}/ui/`);
    await page.waitForFunction((n) => [...document.querySelectorAll(".node-card .node-name")].some((e) => e.textContent === n), XSS);
    assert((await page.locator("#node-grid img").count()) === 0, "an <img> element was injected into the dashboard");
    await page.goto(`${BASE}/ui/models`);
    await page.locator("#pull-target option", { hasText: XSS }).waitFor({ state: "attached" });
    await page.waitForTimeout(300); // give an injected handler time to fire
    assert(dialogs.length === 0, `a dialog fired: ${dialogs.join("; ")}`);
  });

  await step("theme", async () => {
    await page.goto(`${BASE}/ui/`);
    await page.locator(".node-card").first().waitFor();
    const before = await page.evaluate(() => document.documentElement.dataset.theme);
    assert(before === "light", `theme starts as ${before}, want light (the emulated system theme)`);
    await page.click("#theme-toggle");
    assert((await page.evaluate(() => document.documentElement.dataset.theme)) === "dark", "toggle did not switch to dark");
    await page.reload();
    assert((await page.evaluate(() => document.documentElement.dataset.theme)) === "dark", "dark theme not kept across a reload");
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert(bg !== "rgb(245, 246, 248)", `body background still light in dark mode: ${bg}`);
    await page.locator(".node-card").first().waitFor();
    await page.waitForTimeout(300);
    await screenshot("dashboard-dark");
    for (const p of ["nodes", "models", "settings"]) {
      await page.goto(`${BASE}/ui/${p}`);
      await page.waitForLoadState("networkidle");
      await screenshot(`${p}-dark`);
    }
  });

  await step("node-manage", async () => {
    await page.goto(`${BASE}/ui/nodes`);
    const row = (name) => page.locator("#nodes-body tr", { has: page.locator(".node-name", { hasText: name }) }).first();
    // A duplicate URL is refused next to the field.
    await page.click("#add-node");
    await page.fill("#node-name", "dup");
    await page.fill("#node-url", env.NODE2_URL);
    await page.click("#node-save");
    await page.locator('#node-form .field-error[data-for="base_url"]:not(:empty)').waitFor();
    await page.click("#node-dialog [data-close]");
    // Drain and restore.
    await row("gpu-02").locator("[data-action=toggle]").click();
    await page.locator('#nodes-body tr[data-status="disabled"]', { hasText: "gpu-02" }).waitFor();
    await row("gpu-02").locator("[data-action=toggle]").click();
    await page.locator('#nodes-body tr:not([data-status="disabled"])', { hasText: "gpu-02" }).waitFor();
    // Rename through the edit dialog.
    await row("gpu-02").getByRole("button", { name: "Edit" }).click();
    await page.fill("#node-name", "gpu-02b");
    await page.click("#node-save");
    await page.locator("#nodes-body .node-name", { hasText: "gpu-02b" }).waitFor();
    // Delete with confirmation: cancel first, then confirm.
    await row(XSS).locator("[data-action=delete]").click();
    await page.locator("dialog.dialog-confirm").waitFor();
    await page.click("dialog.dialog-confirm [data-close]");
    assert((await page.locator("#nodes-body .node-name", { hasText: XSS }).count()) === 1, "cancel deleted the node");
    await row(XSS).locator("[data-action=delete]").click();
    await page.locator("dialog.dialog-confirm").waitFor();
    await screenshot("nodes-confirm-delete");
    await page.click("dialog.dialog-confirm [data-confirm]");
    await page.locator("#nodes-body .node-name", { hasText: XSS }).waitFor({ state: "detached" });
  });

  await step("form-error-by-the-form", async () => {
    // The server's answer to a bad form shows by the form, not in a banner
    // at the top of a page scrolled down to it.
    await page.goto(`${BASE}/ui/settings`);
    await page.fill("#key-name", "negative-rpm");
    await page.fill("#key-rpm", "-1");
    await page.click("#key-create");
    const slot = page.locator('#key-form .field-error[data-for="rpm_limit"]');
    await page.waitForFunction(() => document.querySelector('#key-form .field-error[data-for="rpm_limit"]').textContent !== "");
    const text = await slot.textContent();
    assert(/negative/.test(text), `the rpm field says ${JSON.stringify(text)}`);
  });

  await step("narrow-layout", async () => {
    // On a phone-wide window no page scrolls sideways, and every link of
    // the nav shows.
    await page.setViewportSize({ width: 400, height: 800 });
    try {
      for (const path of ["/ui/nodes", "/ui/models", "/ui/settings"]) {
        await page.goto(`${BASE}${path}`);
        await page.locator("table tbody tr").first().waitFor();
        const width = await page.evaluate(() => document.documentElement.scrollWidth);
        assert(width <= 400, `${path} is ${width} px wide at 400`);
      }
      const hidden = await page.evaluate(() => [...document.querySelectorAll(".nav a")].filter((a) => {
        const r = a.getBoundingClientRect();
        return r.width === 0 || r.right > window.innerWidth || r.left < 0;
      }).map((a) => a.textContent));
      assert(hidden.length === 0, `nav links out of view: ${hidden.join(", ")}`);
      await screenshot("narrow-settings");
    } finally {
      await page.setViewportSize({ width: 1280, height: 860 });
    }
  });

  await step("model-delete", async () => {
    await page.goto(`${BASE}/ui/models`);
    const row = page.locator("#models-body tr", { hasText: PULL_MODEL });
    await row.getByRole("button", { name: "Delete" }).click();
    await page.click("dialog.dialog-confirm [data-confirm]");
    await page.locator(".banner-success", { hasText: "deleted" }).waitFor();
    await row.waitFor({ state: "detached", timeout: 10000 });
  });

  await step("logs", async () => {
    await page.goto(`${BASE}/ui/logs`);
    await page.waitForFunction(() => {
      const first = document.querySelector("#logs-body tr");
      return first && first.textContent !== "Loading…";
    });
    await screenshot("logs-dark");
    const err = await page.$$eval("#logs-body tr.empty", (rs) => rs.map((r) => r.textContent).join(""));
    assert(!err.startsWith("Could not"), err);
    assert((await page.locator("#logs-body .level").count()) > 0, "no log lines shown");
    // A level in the address, in the lower case the docs use, is kept.
    await page.goto(`${BASE}/ui/logs?level=warn`);
    await page.waitForFunction(() => {
      const first = document.querySelector("#logs-body tr");
      return first && first.textContent !== "Loading…";
    });
    assert((await page.inputValue("#log-level")) === "WARN", `level filter ${await page.inputValue("#log-level")}`);
    assert(/level=warn/i.test(page.url()), `the address lost its level: ${page.url()}`);
    // Filter by level: every line shown has it.
    await page.selectOption("#log-level", "INFO");
    await page.waitForFunction(() => [...document.querySelectorAll("#logs-body .level")].every((l) => l.textContent === "INFO"));
    await page.click("#theme-toggle");
    await screenshot("logs-light");
  });

  await step("logout", async () => {
    await page.click("#logout");
    await page.waitForURL(/\/ui\/login/);
    await page.goto(`${BASE}/ui/settings`);
    await page.waitForURL(/\/ui\/login\?next=%2Fui%2Fsettings/);
  });

  await step("no-dialogs-or-errors", async () => {
    assert(dialogs.length === 0, `dialogs fired: ${dialogs.join("; ")}`);
    assert(problems.length === 0, problems.slice(0, 5).join(" | "));
  });
} catch (e) {
  if (!(e instanceof Abort)) {
    failures++;
    emit({ step: "script", ok: false, error: String(e && e.stack ? e.stack : e) });
  }
} finally {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failures ? 1 : 0);
