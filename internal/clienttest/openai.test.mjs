// openai 7.57.0 against aivonx serve's /v1 routes, with a dummy API key as
// Ollama users configure it. maxRetries: 0 so counts are exact (the SDK
// would otherwise retry 5xx and connection errors twice).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { APIError, NotFoundError } from 'openai';
import {
  proxy, tokens, answer, chatModel, embedModel, models,
  reset, setFaults, stats, waitReady, waitStopped, directJSON, lastRequest,
} from './lib.mjs';

const client = new OpenAI({ baseURL: proxy + '/v1', apiKey: 'ollama', maxRetries: 0 });
const messages = [{ role: 'user', content: 'hello there' }];

async function collect(stream, field, onPart) {
  const parts = [];
  const chunks = [];
  try {
    for await (const chunk of stream) {
      chunks.push(chunk);
      const p = field(chunk);
      if (p) parts.push(p);
      onPart?.(parts.length);
    }
  } catch (error) {
    return { parts, chunks, error };
  }
  return { parts, chunks, error: null };
}

test('chat.completions not streamed', async () => {
  await reset(); // so the only last request is this one
  const res = await client.chat.completions.create({ model: chatModel, messages });
  assert.equal(res.object, 'chat.completion');
  assert.equal(res.model, chatModel);
  assert.equal(res.choices[0].message.content, answer);
  assert.equal(res.choices[0].finish_reason, 'stop');
  assert.equal(res.usage.completion_tokens, tokens.length);
  // The dummy key was accepted, and not passed on to the node.
  const last = await lastRequest('/v1/chat/completions');
  assert.equal(last.headers.Authorization, undefined, 'the client\'s Authorization reached the node');
});

test('chat.completions streamed, with usage', async () => {
  const stream = await client.chat.completions.create({
    model: chatModel, messages, stream: true, stream_options: { include_usage: true },
  });
  const { parts, chunks, error } = await collect(stream, (c) => c.choices[0]?.delta?.content);
  assert.equal(error, null);
  assert.deepEqual(parts, tokens);
  const finish = chunks.find((c) => c.choices[0]?.finish_reason);
  assert.equal(finish?.choices[0].finish_reason, 'stop');
  assert.equal(chunks.at(-1).usage?.completion_tokens, tokens.length);
});

test('completions not streamed and streamed', async () => {
  const res = await client.completions.create({ model: chatModel, prompt: 'why is the sky blue', max_tokens: 3 });
  assert.equal(res.choices[0].text, tokens.slice(0, 3).join(''));
  assert.equal(res.choices[0].finish_reason, 'length');
  const stream = await client.completions.create({ model: chatModel, prompt: 'hi', stream: true });
  const { parts, error } = await collect(stream, (c) => c.choices[0]?.text);
  assert.equal(error, null);
  assert.deepEqual(parts, tokens);
});

test('embeddings with the default base64 encoding decode to the node\'s floats', async () => {
  const input = ['first text', 'second text'];
  await reset();
  const res = await client.embeddings.create({ model: embedModel, input });
  const sent = JSON.parse((await lastRequest('/v1/embeddings')).body);
  assert.equal(sent.encoding_format, 'base64', 'the SDK default reached the node');
  const want = await directJSON('/v1/embeddings', { model: embedModel, input, encoding_format: 'float' });
  assert.equal(res.data.length, 2);
  for (let i = 0; i < 2; i++) {
    assert.ok(Array.isArray(res.data[i].embedding), `data[${i}] was not decoded to an array`);
    assert.deepEqual(res.data[i].embedding, want.data[i].embedding.map(Math.fround));
  }
});

test('models.list is the union, models.retrieve echoes the name', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), models);
  const m = await client.models.retrieve(chatModel);
  assert.equal(m.id, chatModel);
  assert.equal(m.object, 'model');
});

test('images.generate reaches a node with the model and returns its PNG', async () => {
  await reset();
  const res = await client.images.generate({ model: chatModel, prompt: 'a lighthouse', size: '8x8' });
  const png = Buffer.from(res.data[0].b64_json, 'base64');
  assert.equal(png.subarray(1, 4).toString(), 'PNG');
  assert.equal(png.readUInt32BE(16), 8, 'the size did not reach the node');
  const sent = JSON.parse((await lastRequest('/v1/images/generations')).body);
  assert.equal(sent.prompt, 'a lighthouse');
  await assert.rejects(client.images.generate({ model: 'nope', prompt: 'x' }), NotFoundError);
});

test('unknown model is a NotFoundError', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'nope', messages }), (err) => {
    assert.ok(err instanceof NotFoundError, `got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.status, 404);
    assert.match(err.message, /nope/);
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: 'nope', messages, stream: true }), NotFoundError);
  await assert.rejects(client.embeddings.create({ model: 'nope', input: 'x' }), NotFoundError);
  await assert.rejects(client.models.retrieve('nope'), NotFoundError);
});

// ---- faults (last: they take nodes out of rotation) ----

test('a node cut mid-stream: the proxy\'s data: {"error":…} makes the iterator throw APIError', async (t) => {
  await reset();
  t.after(async () => { await reset(); await waitReady(); });
  await setFaults({ drop_after: 2 });
  const stream = await client.chat.completions.create({ model: chatModel, messages, stream: true });
  const { parts, error } = await collect(stream, (c) => c.choices[0]?.delta?.content);
  assert.deepEqual(parts, tokens.slice(0, 2));
  assert.ok(error instanceof APIError, `iterator ended with ${error === null ? 'no error: silent truncation' : error}`);
  t.diagnostic(`error seen: ${error.message}`);
  assert.equal((await stats()).requests['/v1/chat/completions'], 1, 'retried after bytes were sent');
});

test('Ollama\'s own runner failure on /v1 (empty chunk, no [DONE]) reaches the client as an error', async (t) => {
  await reset();
  t.after(reset);
  await setFaults({ error_after: 2 });
  const stream = await client.chat.completions.create({ model: chatModel, messages, stream: true });
  const { parts, chunks, error } = await collect(stream, (c) => c.choices[0]?.delta?.content);
  assert.deepEqual(parts, tokens.slice(0, 2));
  t.diagnostic(`chunks=${chunks.length} last=${JSON.stringify(chunks.at(-1))} error=${error}`);
  assert.ok(error instanceof APIError, `iterator ended with ${error === null ? 'no error: silent truncation' : error}`);
});

test('aborting the stream stops generation on the node', async (t) => {
  await reset();
  t.after(reset);
  await setFaults({ token_delay_ms: 50 });
  const ac = new AbortController();
  const stream = await client.chat.completions.create({ model: chatModel, messages, stream: true }, { signal: ac.signal });
  const { parts, error } = await collect(stream, (c) => c.choices[0]?.delta?.content, (n) => n === 2 && ac.abort());
  // The SDK treats an abort as the end of the stream.
  t.diagnostic(`after abort: parts=${parts.length} error=${error}`);
  assert.ok(parts.length >= 2 && parts.length < tokens.length, `parts: ${parts.length}`);
  await waitStopped();
});
