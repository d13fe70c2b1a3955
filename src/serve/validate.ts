// Request bodies of /v1/completions and /v1/chat/completions, checked field by field: a wrong
// type or range is a 400 naming the field (`param`), as the OpenAI API answers. Fields this
// server does not implement (echo, suffix, tools, ...) are refused when set to a value that would
// change the answer, and ignored when absent or at their neutral value.
import { badRequest } from './errors.js';

export interface CommonParams {
  model: string;
  maxTokens: number | undefined;
  temperature: number;
  topP: number;
  topK: number | undefined;
  n: number;
  stop: string[];
  seed: number | undefined;
  stream: boolean;
  includeUsage: boolean;
}

export interface CompletionParams extends CommonParams {
  /** Text prompts or token-id prompts, one choice set each. */
  prompts: (string | number[])[];
  logprobs: number | null;
}

export interface ChatParams extends CommonParams {
  messages: { role: string; content: string }[];
  /** null: no logprobs; else the number of alternatives (top_logprobs, 0 ..). */
  logprobs: number | null;
}

type Body = Record<string, unknown>;

function isObject(v: unknown): v is Body {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function num(b: Body, key: string, o: { min?: number; max?: number; integer?: boolean } = {}): number | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw badRequest(`'${key}' must be a number, got ${typeName(v)}`, key, 'invalid_type');
  if (o.integer && !Number.isInteger(v)) throw badRequest(`'${key}' must be an integer, got ${v}`, key, 'invalid_type');
  if (o.min !== undefined && v < o.min) throw badRequest(`'${key}' must be ≥ ${o.min}, got ${v}`, key, 'invalid_value');
  if (o.max !== undefined && v > o.max) throw badRequest(`'${key}' must be ≤ ${o.max}, got ${v}`, key, 'invalid_value');
  return v;
}

function bool(b: Body, key: string): boolean | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw badRequest(`'${key}' must be a boolean, got ${typeName(v)}`, key, 'invalid_type');
  return v;
}

function common(b: unknown): { b: Body; c: CommonParams } {
  if (!isObject(b)) throw badRequest(`the request body must be a JSON object, got ${typeName(b)}`, null, 'invalid_body');
  const model = b['model'];
  if (model === undefined) throw badRequest("you must provide a 'model' parameter", 'model', 'missing_required_parameter');
  if (typeof model !== 'string') throw badRequest(`'model' must be a string, got ${typeName(model)}`, 'model', 'invalid_type');
  const stopV = b['stop'];
  let stop: string[] = [];
  if (typeof stopV === 'string') stop = [stopV];
  else if (Array.isArray(stopV)) {
    if (stopV.length > 4 || !stopV.every((s) => typeof s === 'string')) throw badRequest("'stop' must be a string or an array of up to 4 strings", 'stop', 'invalid_type');
    stop = stopV as string[];
  } else if (stopV !== undefined && stopV !== null) throw badRequest(`'stop' must be a string or an array of strings, got ${typeName(stopV)}`, 'stop', 'invalid_type');
  if (stop.some((s) => s === '')) throw badRequest("'stop' must not contain the empty string", 'stop', 'invalid_value');
  const so = b['stream_options'];
  if (so !== undefined && so !== null && !isObject(so)) throw badRequest("'stream_options' must be an object", 'stream_options', 'invalid_type');
  const includeUsage = isObject(so) ? bool(so, 'include_usage') ?? false : false;
  const c: CommonParams = {
    model,
    maxTokens: num(b, 'max_tokens', { integer: true, min: 1 }) ?? num(b, 'max_completion_tokens', { integer: true, min: 1 }),
    temperature: num(b, 'temperature', { min: 0, max: 2 }) ?? 1,
    topP: num(b, 'top_p', { min: 0, max: 1 }) ?? 1,
    topK: num(b, 'top_k', { integer: true, min: -1 }),
    n: num(b, 'n', { integer: true, min: 1, max: 16 }) ?? 1,
    stop,
    seed: num(b, 'seed', { integer: true }),
    stream: bool(b, 'stream') ?? false,
    includeUsage,
  };
  if (c.topK !== undefined && c.topK <= 0) c.topK = undefined; // vLLM's -1 / 0: off
  if (c.topP === 0) c.topP = Number.MIN_VALUE; // the most likely token only
  for (const key of ['presence_penalty', 'frequency_penalty']) {
    const v = num(b, key, { min: -2, max: 2 });
    if (v !== undefined && v !== 0) throw badRequest(`'${key}' is not supported by this server`, key, 'unsupported_parameter');
  }
  if (b['best_of'] !== undefined && b['best_of'] !== null && b['best_of'] !== 1) throw badRequest("'best_of' is not supported by this server", 'best_of', 'unsupported_parameter');
  return { b, c };
}

export function parseCompletion(body: unknown): CompletionParams {
  const { b, c } = common(body);
  const p = b['prompt'];
  if (p === undefined) throw badRequest("you must provide a 'prompt' parameter", 'prompt', 'missing_required_parameter');
  let prompts: (string | number[])[];
  const isIds = (x: unknown): x is number[] => Array.isArray(x) && x.length > 0 && x.every((t) => Number.isInteger(t));
  if (typeof p === 'string') prompts = [p];
  else if (isIds(p)) prompts = [p];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string')) prompts = p as string[];
  else if (Array.isArray(p) && p.length > 0 && p.every(isIds)) prompts = p as number[][];
  else throw badRequest("'prompt' must be a string, an array of strings, an array of token ids or an array of such arrays", 'prompt', 'invalid_type');
  const logprobs = num(b, 'logprobs', { integer: true, min: 0, max: 20 }) ?? null;
  if (bool(b, 'echo')) throw badRequest("'echo' is not supported by this server", 'echo', 'unsupported_parameter');
  if (typeof b['suffix'] === 'string' && b['suffix'] !== '') throw badRequest("'suffix' is not supported by this server", 'suffix', 'unsupported_parameter');
  return { ...c, prompts, logprobs };
}

export function parseChat(body: unknown): ChatParams {
  const { b, c } = common(body);
  const m = b['messages'];
  if (m === undefined) throw badRequest("you must provide a 'messages' parameter", 'messages', 'missing_required_parameter');
  if (!Array.isArray(m) || m.length === 0) throw badRequest("'messages' must be a non-empty array", 'messages', 'invalid_type');
  const messages = m.map((x, i) => {
    if (!isObject(x)) throw badRequest(`'messages[${i}]' must be an object`, `messages[${i}]`, 'invalid_type');
    if (typeof x['role'] !== 'string') throw badRequest(`'messages[${i}].role' must be a string`, `messages[${i}].role`, 'invalid_type');
    let content = x['content'];
    // Content parts: the text parts joined (images and audio are refused).
    if (Array.isArray(content)) {
      if (!content.every((part) => isObject(part) && part['type'] === 'text' && typeof part['text'] === 'string')) {
        throw badRequest(`'messages[${i}].content' parts must be text parts ({"type": "text", "text": ...})`, `messages[${i}].content`, 'invalid_type');
      }
      content = (content as { text: string }[]).map((part) => part.text).join('');
    }
    if (content === null || content === undefined) content = '';
    if (typeof content !== 'string') throw badRequest(`'messages[${i}].content' must be a string or an array of text parts`, `messages[${i}].content`, 'invalid_type');
    return { role: x['role'], content };
  });
  const want = bool(b, 'logprobs') ?? false;
  const top = num(b, 'top_logprobs', { integer: true, min: 0, max: 20 });
  if (top !== undefined && !want) throw badRequest("'top_logprobs' needs 'logprobs': true", 'top_logprobs', 'invalid_value');
  if (Array.isArray(b['tools']) && b['tools'].length) throw badRequest("'tools' are not supported by this server", 'tools', 'unsupported_parameter');
  return { ...c, messages, logprobs: want ? top ?? 0 : null };
}
