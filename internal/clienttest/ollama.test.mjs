// ollama-js 0.6.4 against aivonx serve. It always sends `stream` explicitly
// (default false) and Accept: application/json, also on streams.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ollama } from 'ollama';
import {
  proxy, tokens, answer, version, chatModel, embedModel, models, loaded,
  reset, setFaults, stats, waitReady, waitStopped, directJSON, missingRouteReason,
} from './lib.mjs';

const client = new Ollama({ host: proxy });
const messages = [{ role: 'user', content: 'hello there' }];

// collect iterates a stream, returning the parts before done and the final
// message (or the error the iterator threw).
async function collect(stream, field, onPart) {
  const parts = [];
  let final = null;
  try {
    for await (const chunk of stream) {
      if (chunk.done) final = chunk;
      else parts.push(field(chunk));
      onPart?.(parts.length);
    }
  } catch (error) {
    return { parts, final, error };
  }
  return { parts, final, error: null };
}

test('version is the lowest of the nodes', async () => {
  assert.deepEqual(await client.version(), { version });
});

test('list is the union of the nodes', async () => {
  const { models: got } = await client.list();
  assert.deepEqual(got.map((m) => m.name).sort(), models);
  for (const m of got) assert.ok(m.digest && m.size > 0 && m.details?.format, `incomplete ${JSON.stringify(m)}`);
});

test('ps is the union of loaded models', async () => {
  const { models: got } = await client.ps();
  assert.deepEqual(got.map((m) => m.name).sort(), loaded);
  for (const m of got) assert.ok(m.expires_at && m.digest, `incomplete ${JSON.stringify(m)}`);
});

test('show equals the node\'s answer', async () => {
  const got = await client.show({ model: chatModel });
  const want = await directJSON('/api/show', { model: chatModel });
  assert.ok(got.modified_at);
  delete got.modified_at;
  delete want.modified_at;
  assert.deepEqual(got, want);
});

test('chat streamed: one chunk per token, then done', async () => {
  const stream = await client.chat({ model: chatModel, messages, stream: true });
  const { parts, final, error } = await collect(stream, (c) => c.message.content);
  assert.equal(error, null);
  assert.deepEqual(parts, tokens);
  assert.equal(final.done_reason, 'stop');
  assert.equal(final.eval_count, tokens.length);
  assert.equal(final.model, chatModel);
});

test('chat not streamed (the client default)', async () => {
  const res = await client.chat({ model: chatModel, messages });
  assert.equal(res.message.content, answer);
  assert.equal(res.message.role, 'assistant');
  assert.equal(res.done, true);
  assert.equal(res.eval_count, tokens.length);
});

test('generate streamed', async () => {
  const stream = await client.generate({ model: chatModel, prompt: 'why is the sky blue', stream: true });
  const { parts, final, error } = await collect(stream, (c) => c.response);
  assert.equal(error, null);
  assert.deepEqual(parts, tokens);
  assert.ok(final.context?.length > 0, 'the final chunk carries the context');
});

test('generate not streamed, options pass through', async () => {
  const res = await client.generate({ model: chatModel, prompt: 'hi', options: { num_predict: 2 } });
  assert.equal(res.response, tokens.slice(0, 2).join(''));
  assert.equal(res.done_reason, 'length');
});

test('embed equals the node\'s vectors', async () => {
  const input = ['first text', 'second text'];
  const got = await client.embed({ model: embedModel, input });
  const want = await directJSON('/api/embed', { model: embedModel, input });
  assert.equal(got.model, embedModel);
  assert.deepEqual(got.embeddings, want.embeddings);
  assert.equal(got.embeddings.length, 2);
});

test('legacy embeddings equal the node\'s', async () => {
  const got = await client.embeddings({ model: embedModel, prompt: 'some text' });
  const want = await directJSON('/api/embeddings', { model: embedModel, prompt: 'some text' });
  assert.ok(got.embedding.length > 0);
  assert.deepEqual(got.embedding, want.embedding);
});

for (const [name, call] of [
  ['chat', () => client.chat({ model: 'nope', messages })],
  ['chat streamed', () => client.chat({ model: 'nope', messages, stream: true })],
  ['generate', () => client.generate({ model: 'nope', prompt: 'x' })],
  ['embed', () => client.embed({ model: 'nope', input: 'x' })],
  ['show', () => client.show({ model: 'nope' })],
]) {
  test(`unknown model on ${name} is a ResponseError with status_code 404`, async () => {
    await assert.rejects(call(), (err) => {
      assert.equal(err.name, 'ResponseError', `got ${err}`);
      assert.equal(err.status_code, 404);
      assert.match(err.error, /nope/);
      return true;
    });
  });
}

test('pull streams progress and the model is listed at once', async (t) => {
  let stream;
  try {
    stream = await client.pull({ model: 'tinyllama', stream: true });
  } catch (err) {
    const why = missingRouteReason(err.status_code, err.error ?? err.message);
    if (why) return t.skip(`proxy has no usable POST /api/pull yet: ${why}`);
    throw err;
  }
  const statuses = [];
  let layer = false;
  for await (const p of stream) {
    statuses.push(p.status);
    if (/^pulling [0-9a-f]{12}$/.test(p.status) && p.total > 0) layer = true;
  }
  assert.equal(statuses[0], 'pulling manifest');
  assert.equal(statuses.at(-1), 'success');
  assert.ok(layer, `no layer progress in ${JSON.stringify(statuses)}`);
  const { models: after } = await client.list();
  assert.ok(after.some((m) => m.name === 'tinyllama:latest'), 'the pulled model is listed at once');
});

// ---- faults (last: they take nodes out of rotation) ----

test('a runner error mid-stream makes the iterator throw', async (t) => {
  await reset();
  t.after(reset);
  await setFaults({ error_after: 2 });
  const stream = await client.chat({ model: chatModel, messages, stream: true });
  const { parts, error } = await collect(stream, (c) => c.message.content);
  assert.deepEqual(parts, tokens.slice(0, 2));
  assert.ok(error, 'the iterator did not throw');
  assert.match(error.message, /unexpected EOF/);
});

test('a node cut mid-stream makes the iterator throw the proxy\'s error line', async (t) => {
  await reset();
  t.after(async () => { await reset(); await waitReady(); });
  await setFaults({ drop_after: 2 });
  const stream = await client.generate({ model: chatModel, prompt: 'hi', stream: true });
  const { parts, error } = await collect(stream, (c) => c.response);
  assert.deepEqual(parts, tokens.slice(0, 2));
  assert.ok(error, 'the iterator did not throw');
  // Not a bare transport error ("terminated") nor the client's own "Did not
  // receive done": an {"error":…} line from the proxy.
  assert.notEqual(error.name, 'TypeError', `transport error: ${error}`);
  assert.doesNotMatch(error.message, /Did not receive done/);
  t.diagnostic(`error seen: ${error.message}`);
});

test('stream.abort() stops generation on the node', async (t) => {
  await reset();
  t.after(reset);
  await setFaults({ token_delay_ms: 50 }); // 1 s for 20 tokens if not stopped
  const stream = await client.chat({ model: chatModel, messages, stream: true });
  const { parts, error } = await collect(stream, (c) => c.message.content, (n) => n === 2 && stream.abort());
  assert.equal(error?.name, 'AbortError', `got ${error}`);
  assert.deepEqual(parts, tokens.slice(0, 2));
  await waitStopped();
  assert.equal((await stats()).requests['/api/chat'], 1);
});

test('client.abort() stops every stream of the client on the node', async (t) => {
  await reset();
  t.after(reset);
  await setFaults({ token_delay_ms: 50 });
  const own = new Ollama({ host: proxy });
  const stream = await own.generate({ model: chatModel, prompt: 'long', stream: true });
  const { error } = await collect(stream, (c) => c.response, (n) => n === 2 && own.abort());
  assert.equal(error?.name, 'AbortError', `got ${error}`);
  await waitStopped();
});
