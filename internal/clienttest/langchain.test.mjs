// @langchain/ollama 1.3.0 (on ollama-js) against aivonx serve. It always
// sends stream:true, even for invoke(), and adds "truncate":false to embed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatOllama, Ollama, OllamaEmbeddings } from '@langchain/ollama';
import {
  proxy, tokens, answer, chatModel, embedModel,
  reset, setFaults, waitReady, waitStopped, directJSON, lastRequest,
} from './lib.mjs';

const chat = new ChatOllama({ model: chatModel, baseUrl: proxy, maxRetries: 0 });
const llm = new Ollama({ model: chatModel, baseUrl: proxy, maxRetries: 0 });
const embeddings = new OllamaEmbeddings({ model: embedModel, baseUrl: proxy, maxRetries: 0 });

async function collect(iterable, field, onPart) {
  const parts = [];
  try {
    for await (const chunk of iterable) {
      const p = field(chunk);
      if (p) parts.push(p);
      onPart?.(parts.length);
    }
  } catch (error) {
    return { parts, error };
  }
  return { parts, error: null };
}

test('ChatOllama.invoke', async () => {
  await reset(); // so the only last /api/chat request is this one
  const msg = await chat.invoke('hello there');
  assert.equal(msg.content, answer);
  assert.equal(msg.usage_metadata?.output_tokens, tokens.length);
  const sent = JSON.parse((await lastRequest('/api/chat')).body);
  assert.equal(sent.stream, true, 'langchain streams even for invoke');
});

test('ChatOllama.stream', async () => {
  const { parts, error } = await collect(await chat.stream('hello there'), (c) => c.content);
  assert.equal(error, null);
  assert.deepEqual(parts, tokens);
});

test('Ollama LLM invoke and stream', async () => {
  assert.equal(await llm.invoke('why is the sky blue'), answer);
  const { parts, error } = await collect(await llm.stream('hi'), (c) => c);
  assert.equal(error, null);
  assert.deepEqual(parts, tokens);
});

test('OllamaEmbeddings embedQuery and embedDocuments equal the node\'s vectors', async () => {
  await reset();
  const q = await embeddings.embedQuery('a question');
  const sent = JSON.parse((await lastRequest('/api/embed')).body);
  assert.equal(sent.truncate, false, 'the body reached the node unchanged');
  const wantQ = await directJSON('/api/embed', { model: embedModel, input: ['a question'] });
  assert.deepEqual(q, wantQ.embeddings[0]);
  const docs = ['first doc', 'second doc', 'third doc'];
  const got = await embeddings.embedDocuments(docs);
  const want = await directJSON('/api/embed', { model: embedModel, input: docs });
  assert.deepEqual(got, want.embeddings);
});

test('unknown model: invoke rejects with the 404', async () => {
  const nope = new ChatOllama({ model: 'nope', baseUrl: proxy, maxRetries: 0 });
  await assert.rejects(nope.invoke('x'), (err) => {
    assert.equal(err.status_code, 404, `got ${err?.name}: ${err}`);
    assert.match(err.message, /nope/);
    return true;
  });
});

// ---- faults (last: they take nodes out of rotation) ----

test('a runner error mid-stream throws from invoke and from stream', async (t) => {
  await reset();
  t.after(reset);
  await setFaults({ error_after: 2 });
  await assert.rejects(chat.invoke('hello'), /unexpected EOF/);
  const { parts, error } = await collect(await chat.stream('hello'), (c) => c.content);
  assert.deepEqual(parts, tokens.slice(0, 2));
  assert.match(String(error?.message), /unexpected EOF/);
});

test('a node cut mid-stream throws the proxy\'s error', async (t) => {
  await reset();
  t.after(async () => { await reset(); await waitReady(); });
  await setFaults({ drop_after: 2 });
  const { parts, error } = await collect(await llm.stream('hi'), (c) => c);
  assert.deepEqual(parts, tokens.slice(0, 2));
  assert.ok(error, 'no error after a cut stream');
  assert.notEqual(error.name, 'TypeError', `transport error: ${error}`);
  t.diagnostic(`error seen: ${error.message}`);
});

// LangChain's .stream(…, {signal}) stops yielding but leaves the HTTP
// request running (it never aborts the fetch: the same happens against a
// node directly), so only invoke(…, {signal}), which calls client.abort() on
// the next chunk, can stop the node.
test('invoke with an AbortSignal stops generation on the node', async (t) => {
  await reset();
  t.after(reset);
  await setFaults({ token_delay_ms: 50 }); // 1 s for 20 tokens if not stopped
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 150);
  const started = Date.now();
  let error = null;
  try {
    await chat.invoke('long', { signal: ac.signal });
  } catch (e) {
    error = e;
  }
  t.diagnostic(`invoke ended after ${Date.now() - started} ms with ${error ?? 'no error (partial answer)'}`);
  await waitStopped();
});
