// Shared helpers of the client tests. node_test.go starts `aivonx serve` in
// front of fake Ollama nodes (with their /_fake/* control endpoints) and
// passes where they are in the environment:
//
//   AIVONX_URL      the proxy, e.g. http://127.0.0.1:41234
//   FAKE_NODES      comma-separated fake node URLs
//   FAKE_TOKENS     JSON array: the tokens of every generated answer
//   FAKE_VERSION    the lowest Ollama version among the nodes
//   CHAT_MODEL, EMBED_MODEL, MODELS (JSON array of the /api/tags union),
//   LOADED (JSON array of the /api/ps union)

export const proxy = must('AIVONX_URL');
export const fakes = must('FAKE_NODES').split(',');
export const tokens = JSON.parse(must('FAKE_TOKENS'));
export const answer = tokens.join('');
export const version = must('FAKE_VERSION');
export const chatModel = must('CHAT_MODEL');
export const embedModel = must('EMBED_MODEL');
export const models = JSON.parse(must('MODELS'));
export const loaded = JSON.parse(must('LOADED'));

function must(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these scripts through go test ./internal/clienttest/`);
  return v;
}

async function control(base, method, path, body) {
  const res = await fetch(base + '/_fake/' + path, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!res.ok) throw new Error(`${method} ${base}/_fake/${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

// setFaults applies the same faults to every node, e.g. {error_after: 2}.
export async function setFaults(f) {
  await Promise.all(fakes.map((u) => control(u, 'POST', 'faults', f)));
}

// reset clears faults and counters on every node, and sets the token delay
// (which a reset leaves alone) back to 0.
export async function reset() {
  await Promise.all(fakes.map((u) => control(u, 'POST', 'reset')));
  await setFaults({ token_delay_ms: 0 });
}

// stats sums the nodes' counters: {active, cancelled, requests: {path: n}}.
export async function stats() {
  const all = await Promise.all(fakes.map((u) => control(u, 'GET', 'stats')));
  const out = { active: 0, cancelled: 0, requests: {} };
  for (const s of all) {
    out.active += s.active;
    out.cancelled += s.cancelled;
    for (const [p, n] of Object.entries(s.requests)) out.requests[p] = (out.requests[p] ?? 0) + n;
  }
  return out;
}

// lastRequest returns the last request a node saw on path
// ({host, headers, body}), from whichever node has one.
export async function lastRequest(path) {
  for (const u of fakes) {
    const res = await fetch(`${u}/_fake/last?path=${encodeURIComponent(path)}`);
    if (res.ok) return res.json();
  }
  return null;
}

// waitFor polls cond every 20ms until it returns true, or fails after ms.
export async function waitFor(what, cond, ms = 3000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await cond();
    if (last === true) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms}ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// waitReady waits until the proxy answers HEAD / with 200 again, after a
// fault made it take the nodes out.
export async function waitReady() {
  await waitFor('HEAD / = 200', async () => {
    try {
      const res = await fetch(proxy + '/', { method: 'HEAD' });
      return res.status === 200 || res.status;
    } catch (e) {
      return String(e);
    }
  }, 10000);
}

// waitStopped waits until exactly one generation was cancelled on the nodes
// and none is running.
export async function waitStopped() {
  await waitFor('the node to stop generating (cancelled=1, active=0)', async () => {
    const s = await stats();
    return (s.cancelled === 1 && s.active === 0) || s;
  }, 2000);
}

// directJSON posts body to a fake node directly and returns its JSON answer.
export async function directJSON(path, body, node = fakes[0]) {
  const res = await fetch(node + path, {
    method: body ? 'POST' : 'GET',
    headers: { 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!res.ok) throw new Error(`direct ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

// isMissingRoute tells whether an error means the proxy has no such route
// yet (or keeps it behind credentials these tests do not have).
export function missingRouteReason(status, message) {
  if (status === 404 && /no route/i.test(message)) return `no route (${message})`;
  if (status === 405 || status === 501) return `${status} ${message}`;
  if (status === 401 || status === 403) return `needs credentials (${status} ${message})`;
  return null;
}
