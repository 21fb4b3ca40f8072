/**
 * The tool playground's engine: browser copies of the safe mock tools of scripts/toolcall/tool_mocks.py (same results:
 * weather from SHA-256 of the city name, the same search notes, a calculator that parses arithmetic itself),
 * an MCP client (JSON-RPC over streamable HTTP to the manager's /mcp), the multi-round model <-> tool loop against
 * any OpenAI-compatible endpoint, and the scoring of scripts/eval_tool_call.py (score_case / aggregate).
 */

export type JsonObject = Record<string, unknown>;
export type ToolSchema = { type: "function"; function: { name: string; description: string; parameters: JsonObject } };
export type Call = { name: string; arguments: JsonObject };
export type ToolRunner = (name: string, args: JsonObject) => Promise<unknown>;
export type ChatMessage = JsonObject & { role: string };
type RawCall = { id?: string; type?: string; function?: { name?: string; arguments?: unknown } };

import { checkReply } from "./endpoint";

// ------------------------------------------------------------------------------------------- mocks (browser)

const CONDITIONS = ["晴 sunny", "多云 cloudy", "小雨 light rain", "阴 overcast", "雷阵雨 thunderstorm", "雪 snow"];
const SEARCH_NOTES = [
  { title: "MiniMind", snippet: "MiniMind 是一个从零训练的小型中文语言模型项目，最小的 MiniMind2-Small 约 26M 参数。" },
  { title: "tool calling / 工具调用", snippet: "工具调用模型把调用写成 <tool_call> 块，服务端把它转换成 OpenAI 的 tool_calls。" },
  { title: "OpenAI-compatible server", snippet: "scripts/serve_openai_api.py serves /v1/chat/completions on port 8998." },
  { title: "vLLM", snippet: "vLLM serves the converted model with --enable-auto-tool-choice --tool-call-parser hermes." },
  { title: "tokenizer / 分词器", snippet: "MiniMind 的分词器词表大小为 6400，<|im_start|> 和 <|im_end|> 是对话模板的特殊标记。" },
  { title: "Ascend NPU", snippet: "On Ascend 910B the usual training dtype is float16 with a GradScaler." },
  { title: "SFT", snippet: "监督微调只在 assistant 的回答上计算损失，system、user 和 tool 的内容不计损失。" },
  { title: "LoRA", snippet: "LoRA adapters are saved under out/lora/ and merged into the model for evaluation." },
];

export const MOCK_TOOLS: ToolSchema[] = [
  fn("get_weather", "查询城市的天气（模拟数据）/ current weather of a city (mock data)",
     { city: { type: "string", description: "城市名 / city name" },
       unit: { type: "string", enum: ["celsius", "fahrenheit"], description: "温度单位 / temperature unit" } }, ["city"]),
  fn("calculator", "计算一个算术表达式（+ - * / 和括号），返回结果。",
     { expression: { type: "string", description: "算术表达式，例如 (3+4)*5" } }, ["expression"]),
  fn("search", "搜索项目笔记 / search notes about this project",
     { query: { type: "string", description: "关键词 / keywords" },
       top_k: { type: "integer", description: "返回条数 1-10 / number of results" } }, ["query"]),
  fn("get_time", "查询某个时区的当前时间 / current time in an IANA time zone",
     { timezone: { type: "string", description: "IANA 时区，例如 Asia/Shanghai / time zone" } }, ["timezone"]),
];

function fn(name: string, description: string, properties: JsonObject, required: string[]): ToolSchema {
  return { type: "function", function: { name, description, parameters: { type: "object", properties, required } } };
}

export class CalcError extends Error {}

/** Arithmetic only (numbers, + - * / // % **, parentheses), bounded like tool_mocks.calculate. */
export function calculate(expression: unknown): number {
  if (typeof expression !== "string") throw new CalcError("expression must be a string");
  const text = expression.trim().replace(/[×]/g, "*").replace(/[÷]/g, "/").replace(/（/g, "(").replace(/）/g, ")")
    .replace(/＋/g, "+").replace(/－/g, "-").replace(/＊/g, "*").replace(/／/g, "/")
    .replace(/[０-９]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0xfee0)).replace(/\^/g, "**");
  if (!text) throw new CalcError("empty expression");
  if (text.length > 200) throw new CalcError("expression longer than 200 characters");
  const tokens = text.match(/\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+|\*\*|\/\/|[-+*/%()]|\S/g) ?? [];
  let pos = 0, nodes = 0;
  const peek = () => tokens[pos];
  const next = () => tokens[pos++];
  const node = () => { if (++nodes > 64) throw new CalcError("expression has more than 64 parts"); };
  const check = (v: number) => {
    if (!Number.isFinite(v) || Math.abs(v) >= 1e300) throw new CalcError("result too large");
    return v;
  };
  const atom = (): number => {
    const t = next();
    node();
    if (t === "(") {
      const v = sum();
      if (next() !== ")") throw new CalcError(`missing ) in ${JSON.stringify(expression)}`);
      return v;
    }
    if (t === "-" || t === "+") { const v = power(); return t === "-" ? -v : v; }
    if (t !== undefined && /^(\d|\.\d)/.test(t)) return Number(t);
    throw new CalcError(`not an arithmetic expression: ${JSON.stringify(expression)}`);
  };
  const power = (): number => {
    const base = atom();
    if (peek() === "**") {
      next(); node();
      const exp = unary();
      if (Math.abs(exp) > 64) throw new CalcError(`exponent ${exp} too large (at most 64)`);
      return check(base ** exp);
    }
    return base;
  };
  const unary = (): number => {
    if (peek() === "-" || peek() === "+") { const t = next(); node(); const v = unary(); return t === "-" ? -v : v; }
    return power();
  };
  const product = (): number => {
    let v = unary();
    while (["*", "/", "//", "%"].includes(peek())) {
      const op = next(); node();
      const r = unary();
      if (op !== "*" && r === 0) throw new CalcError("division by zero");
      v = check(op === "*" ? v * r : op === "/" ? v / r : op === "//" ? Math.floor(v / r) : v - r * Math.floor(v / r));
    }
    return v;
  };
  const sum = (): number => {
    let v = product();
    while (peek() === "+" || peek() === "-") {
      const op = next(); node();
      v = check(op === "+" ? v + product() : v - product());
    }
    return v;
  };
  const value = sum();
  if (pos !== tokens.length) throw new CalcError(`not an arithmetic expression: ${JSON.stringify(expression)}`);
  return Number.isInteger(value) && Math.abs(value) < 1e15 ? value : Math.round(value * 1e10) / 1e10;
}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

function terms(text: string): Set<string> {
  const t = text.toLowerCase();
  const words = t.replace(/[^\p{L}\p{N}]/gu, " ").split(/\s+/).filter((w) => [...w].length > 1);
  const han = [...t].filter((c) => c >= "\u4e00" && c <= "\u9fff");
  return new Set([...words, ...han]);
}

/** One call, as the object a tool message carries; bad model output comes back as {error}, never throws. */
export async function runMockTool(name: string, input: unknown, now: Date = new Date()): Promise<unknown> {
  if (typeof input !== "object" || input === null || Array.isArray(input)) return { error: "arguments must be a JSON object" };
  const args = input as JsonObject;
  if (name === "get_weather") {
    const { city, unit = "celsius" } = args;
    if (typeof city !== "string" || !city.trim()) return { error: "city must be a non-empty string" };
    if (unit !== "celsius" && unit !== "fahrenheit") return { error: `unit must be celsius or fahrenheit, not '${unit}'` };
    const h = await sha256(city.trim().toLowerCase());
    const celsius = (h[0] % 36) - 5;
    const temp = unit === "celsius" ? celsius : Math.round(celsius * 9 / 5 + 32);
    return { city: city.trim(), temperature: temp, unit, condition: CONDITIONS[h[1] % CONDITIONS.length],
             humidity: 30 + (h[2] % 60), mock: true };
  }
  if (name === "calculator") {
    try {
      return { expression: args.expression, result: calculate(args.expression) };
    } catch (e) {
      return { error: (e as Error).message };
    }
  }
  if (name === "search") {
    const { query, top_k = 3 } = args;
    if (typeof query !== "string" || !query.trim()) return { error: "query must be a non-empty string" };
    if (typeof top_k !== "number" || !Number.isInteger(top_k) || top_k < 1 || top_k > 10) return { error: "top_k must be an integer from 1 to 10" };
    const q = terms(query);
    const scored = SEARCH_NOTES.map((n, i) => {
      const t = terms(n.title + " " + n.snippet);
      return [[...q].filter((x) => t.has(x)).length, i] as [number, number];
    }).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    return { query, results: scored.slice(0, top_k).filter(([s]) => s > 0).map(([, i]) => SEARCH_NOTES[i]) };
  }
  if (name === "get_time") {
    const { timezone = "UTC" } = args;
    if (typeof timezone !== "string") return { error: "timezone must be a string such as Asia/Shanghai" };
    try {
      const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", {
        timeZone: timezone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
        second: "2-digit", hourCycle: "h23", weekday: "long",
      }).formatToParts(now).map((p) => [p.type, p.value]));
      return { timezone, datetime: `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`,
               weekday: parts.weekday };
    } catch {
      return { error: `unknown time zone '${timezone}' (use an IANA name such as Asia/Shanghai)` };
    }
  }
  return { error: `unknown tool '${name}'` };
}

// ------------------------------------------------------------------------------------------------- MCP client

/** Minimal MCP client over streamable HTTP (stateless server, JSON responses): tools/list and tools/call. */
export class McpClient {
  private id = 0;
  constructor(private url: string, private token: string, private fetchFn: typeof fetch = fetch) {}

  async rpc<T>(method: string, params?: unknown): Promise<T> {
    // called unbound: a browser's fetch called as this.fetchFn(...) throws "Illegal invocation" (`this` is not window)
    const fetchFn = this.fetchFn;
    const resp = await fetchFn(this.url, {
      method: "POST",
      headers: { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json",
                 Accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: ++this.id, method, ...(params ? { params } : {}) }),
    });
    const text = await resp.text();
    if (!resp.ok) throw new Error(`MCP ${method}: HTTP ${resp.status} ${text.slice(0, 200)}`);
    const json = text.trimStart().startsWith("{") ? JSON.parse(text)
      : JSON.parse(text.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join(""));
    if (json.error) throw new Error(`MCP ${method}: ${json.error.message}`);
    return json.result as T;
  }

  async listTools(): Promise<ToolSchema[]> {
    await this.rpc("initialize", { protocolVersion: "2025-06-18", capabilities: {},
                                   clientInfo: { name: "minimind-playground", version: "1" } });
    type McpTool = { name: string; description?: string; inputSchema?: JsonObject & { properties?: JsonObject; required?: string[] } };
    const { tools } = await this.rpc<{ tools: McpTool[] }>("tools/list");
    return tools.map((t) => fn(t.name, t.description ?? "", t.inputSchema?.properties ?? {}, t.inputSchema?.required ?? []));
  }

  async call(name: string, args: JsonObject): Promise<unknown> {
    const r = await this.rpc<{ structuredContent?: { result?: unknown }; content?: { type: string; text?: string }[] }>(
      "tools/call", { name, arguments: args });
    if (r.structuredContent !== undefined) return r.structuredContent.result ?? r.structuredContent;
    const text = (r.content ?? []).filter((c) => c.type === "text").map((c) => c.text ?? "").join("\n");
    try { return JSON.parse(text); } catch { return text; }
  }
}

// ----------------------------------------------------------------------------------------------- the tool loop

export type TraceEntry =
  | { kind: "model"; round: number; ms: number; content: string; calls: Call[]; invalid: string[] }
  | { kind: "tool"; round: number; ms: number; name: string; arguments: unknown; result: unknown };

export type LoopResult = { trace: TraceEntry[]; final: string | null; first: { calls: Call[]; invalid_blocks: number };
                           results: unknown[]; messages: ChatMessage[] };

export type LoopOptions = {
  baseUrl: string; apiKey?: string; model: string; tools: ToolSchema[]; messages: ChatMessage[]; runTool: ToolRunner;
  maxRounds?: number; temperature?: number; maxTokens?: number; fetchFn?: typeof fetch; signal?: AbortSignal;
  onTrace?: (t: TraceEntry) => void;
  origin?: string; // this page's origin, for the --cors_origins hint in errors
};

/** model -> tool calls -> results -> model ..., until a reply without calls or maxRounds model calls. */
export async function runToolLoop(o: LoopOptions): Promise<LoopResult> {
  const fetchFn = o.fetchFn ?? fetch;
  const messages = o.messages.slice();
  const trace: TraceEntry[] = [];
  const results: unknown[] = [];
  let first: LoopResult["first"] | null = null;
  let final: string | null = null;
  const push = (t: TraceEntry) => { trace.push(t); o.onTrace?.(t); };
  for (let round = 1; round <= (o.maxRounds ?? 4); round++) {
    const t0 = performance.now();
    const url = o.baseUrl.replace(/\/+$/, "") + "/chat/completions";
    const resp = await fetchFn(url, {
      method: "POST", signal: o.signal,
      headers: { "Content-Type": "application/json", ...(o.apiKey ? { Authorization: `Bearer ${o.apiKey}` } : {}) },
      body: JSON.stringify({ model: o.model, messages, tools: o.tools.length ? o.tools : undefined,
                             temperature: o.temperature ?? 0, max_tokens: o.maxTokens ?? 512 }),
    });
    const text = await resp.text();
    checkReply(resp, text, url, o.origin ?? "");
    const msg = JSON.parse(text).choices?.[0]?.message ?? {};
    const calls: Call[] = [], invalid: string[] = [];
    const rawCalls: RawCall[] = msg.tool_calls ?? [];
    for (const tc of rawCalls) {
      const raw = tc.function?.arguments;
      try {
        const args = typeof raw === "string" ? JSON.parse(raw || "{}") : raw;
        if (typeof tc.function?.name !== "string" || typeof args !== "object" || args === null || Array.isArray(args)) throw new Error();
        calls.push({ name: tc.function.name, arguments: args as JsonObject });
      } catch {
        invalid.push(String(raw));
      }
    }
    const content = typeof msg.content === "string" ? msg.content : "";
    push({ kind: "model", round, ms: performance.now() - t0, content, calls, invalid });
    if (!first) first = { calls, invalid_blocks: invalid.length };
    if (!rawCalls.length) { final = content; break; }
    messages.push({ role: "assistant", content, tool_calls: rawCalls });
    for (const tc of rawCalls) {
      const call = calls.find((c) => c.name === tc.function?.name);
      let result: unknown;
      const t1 = performance.now();
      let args: unknown = null;
      try { args = typeof tc.function?.arguments === "string" ? JSON.parse(tc.function.arguments) : tc.function?.arguments; } catch { /* invalid */ }
      if (call && args && typeof args === "object" && !Array.isArray(args)) {
        try { result = await o.runTool(call.name, args as JsonObject); } catch (e) { result = { error: (e as Error).message }; }
      } else {
        result = { error: "arguments are not a JSON object" };
      }
      results.push(result);
      push({ kind: "tool", round, ms: performance.now() - t1, name: tc.function?.name ?? "?", arguments: args, result });
      messages.push({ role: "tool", tool_call_id: tc.id, content: JSON.stringify(result) });
    }
  }
  return { trace, final, first: first ?? { calls: [], invalid_blocks: 0 }, results, messages };
}

// --------------------------------------------------------------------------------- scoring (eval_tool_call.py)

/** json.dumps(v, ensure_ascii=False, sort_keys=True): Python's separators ", " and ": ". */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return "[" + v.map(canonical).join(", ") + "]";
  if (v && typeof v === "object") {
    const o = v as JsonObject;
    return "{" + Object.keys(o).sort().map((k) => JSON.stringify(k) + ": " + canonical(o[k])).join(", ") + "}";
  }
  return JSON.stringify(v);
}

export function resultValues(r: unknown): string[] {
  if (Array.isArray(r)) return r.flatMap(resultValues);
  if (r && typeof r === "object") {
    return Object.entries(r).filter(([k]) => k !== "mock" && k !== "error").flatMap(([, v]) => resultValues(v));
  }
  if (typeof r === "number") return [String(r)];
  if (typeof r === "string" && r.trim().length >= 2) return [r.trim().slice(0, 20)];
  return [];
}

function counter(items: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const i of items) m.set(i, (m.get(i) ?? 0) + 1);
  return m;
}

function sameCounter(a: Map<string, number>, b: Map<string, number>): boolean {
  return a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
}

const keyItems = (calls: Call[]) => calls.flatMap((c) => Object.entries(c.arguments).map(([k, v]) => `${c.name}\u0000${k}\u0000${canonical(v)}`));

export type CaseScore = {
  should_call: boolean; detected: boolean | null; no_call_correct: boolean | null; json_valid: boolean | null;
  name_correct: boolean | null; exact: boolean | null; key_tp: number; key_pred: number; key_expected: number;
  uses_result: boolean | null;
};

export function scoreCase(expected: Call[], first: { calls: Call[]; invalid_blocks: number }, final: string | null,
                          results: unknown[], question: string): CaseScore {
  const shouldCall = expected.length > 0;
  const pred = first.calls;
  const called = pred.length > 0 || first.invalid_blocks > 0;
  const s: CaseScore = { should_call: shouldCall, detected: null, no_call_correct: null, json_valid: null,
                         name_correct: null, exact: null, key_tp: 0, key_pred: 0, key_expected: 0, uses_result: null };
  if (shouldCall) {
    s.detected = called;
    s.json_valid = called && first.invalid_blocks === 0;
    s.name_correct = canonical(pred.map((c) => c.name).sort()) === canonical(expected.map((c) => c.name).sort());
    const ident = (cs: Call[]) => counter(cs.map((c) => c.name + "\u0000" + canonical(c.arguments)));
    s.exact = sameCounter(ident(pred), ident(expected));
    const p = counter(keyItems(pred)), e = counter(keyItems(expected));
    s.key_tp = [...p].reduce((n, [k, v]) => n + Math.min(v, e.get(k) ?? 0), 0);
    s.key_pred = [...p.values()].reduce((a, b) => a + b, 0);
    s.key_expected = [...e.values()].reduce((a, b) => a + b, 0);
  } else {
    s.no_call_correct = !called;
  }
  const asked = question + " " + pred.map((c) => canonical(c.arguments)).join(" ");
  const values = results.flatMap(resultValues).filter((v) => !asked.includes(v));
  if (values.length) s.uses_result = final !== null && values.some((v) => final.includes(v));
  return s;
}

const mean = (flags: (boolean | null)[]): number | null => {
  const f = flags.filter((x): x is boolean => x !== null);
  return f.length ? Math.round((f.filter(Boolean).length / f.length) * 1e4) / 1e4 : null;
};

export const METRICS = ["call_detection", "no_call_accuracy", "json_validity", "tool_name_accuracy",
                        "argument_exact_match", "argument_key_f1", "final_uses_result"] as const;

export function aggregate(scores: CaseScore[]): Record<string, number | null> {
  const tp = scores.reduce((a, s) => a + s.key_tp, 0);
  const nPred = scores.reduce((a, s) => a + s.key_pred, 0), nExp = scores.reduce((a, s) => a + s.key_expected, 0);
  const p = nPred ? tp / nPred : 0, r = nExp ? tp / nExp : 0;
  const f1 = p + r ? (2 * p * r) / (p + r) : 0;
  return {
    cases: scores.length,
    should_call: scores.filter((s) => s.should_call).length,
    should_not_call: scores.filter((s) => !s.should_call).length,
    call_detection: mean(scores.map((s) => s.detected)),
    no_call_accuracy: mean(scores.map((s) => s.no_call_correct)),
    json_validity: mean(scores.map((s) => s.json_valid)),
    tool_name_accuracy: mean(scores.map((s) => s.name_correct)),
    argument_exact_match: mean(scores.map((s) => s.exact)),
    argument_key_f1: nExp ? Math.round(f1 * 1e4) / 1e4 : null,
    final_uses_result: mean(scores.map((s) => s.uses_result)),
  };
}
