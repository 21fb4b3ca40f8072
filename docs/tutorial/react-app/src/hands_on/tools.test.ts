// @vitest-environment node
import { describe, expect, it } from "vitest";
import { aggregate, calculate, canonical, McpClient, runMockTool, runToolLoop, scoreCase, MOCK_TOOLS } from "./tools";
import parity from "../data/tool-parity.json";

describe("browser mock tools", () => {
  it("calculator does arithmetic and refuses anything else quickly", () => {
    expect(calculate("(3+4)*5")).toBe(35);
    expect(calculate("２＋３×４")).toBe(14);
    expect(calculate("7//2")).toBe(3);
    expect(calculate("2**-1")).toBe(0.5);
    expect(calculate("-2**2")).toBe(-4);
    for (const bad of ["alert(1)", "constructor.constructor('x')()", "9**9**9**9", "1/0", "(1+2", "", "1".repeat(201)]) {
      expect(() => calculate(bad)).toThrow();
    }
  });

  // cases written by Python from scripts/toolcall/tool_mocks.py's own functions (scripts/tutorial/hands_on.py); the Python
  // test suite fails when the committed file is older than the mocks, so this compares with today's Python
  it.each(parity.cases.map((c) => [c.name, JSON.stringify(c.arguments), c] as const))(
    "%s(%s) returns what scripts/toolcall/tool_mocks.py returns", async (_name, _args, c) => {
      expect(await runMockTool(c.name, c.arguments, new Date(parity.now))).toEqual(c.result);
    });

  it("parity cases cover every mock tool", () => {
    expect(new Set(parity.cases.map((c) => c.name))).toEqual(new Set([...MOCK_TOOLS.map((t) => t.function.name), "nope"]));
  });

  it("search and time", async () => {
    const s = await runMockTool("search", { query: "LoRA", top_k: 2 }) as { results: { title: string }[] };
    expect(s.results[0].title).toBe("LoRA");
    const t = await runMockTool("get_time", { timezone: "Asia/Shanghai" }, new Date(Date.UTC(2026, 0, 1, 0, 0, 0)));
    expect(t).toEqual({ timezone: "Asia/Shanghai", datetime: "2026-01-01 08:00:00", weekday: "Thursday" });
    expect((await runMockTool("get_time", { timezone: "Mars/Base" }) as { error: string }).error).toContain("unknown time zone");
  });
});

describe("tool loop", () => {
  it("model -> tool -> model, with a trace and the results fed back", async () => {
    const bodies: { messages: unknown[] }[] = [];
    const replies = [
      { content: "", tool_calls: [{ id: "c1", type: "function", function: { name: "calculator", arguments: '{"expression": "6*7"}' } }] },
      { content: "答案是 42" },
    ];
    const fetchFn = (async (_u: string, init: RequestInit) => {
      bodies.push(JSON.parse(init.body as string));
      return new Response(JSON.stringify({ choices: [{ message: replies.shift() }] }), { status: 200 });
    }) as unknown as typeof fetch;
    const r = await runToolLoop({ baseUrl: "http://x/v1", model: "m", tools: MOCK_TOOLS, runTool: runMockTool,
                                  messages: [{ role: "user", content: "6 乘 7" }], fetchFn });
    expect(r.final).toBe("答案是 42");
    expect(r.trace.map((t) => t.kind)).toEqual(["model", "tool", "model"]);
    expect(r.results).toEqual([{ expression: "6*7", result: 42 }]);
    expect(bodies[1].messages.at(-1)).toEqual({ role: "tool", tool_call_id: "c1", content: '{"expression":"6*7","result":42}' });
    const s = scoreCase([{ name: "calculator", arguments: { expression: "6*7" } }], r.first, r.final, r.results, "6 乘 7");
    expect(s).toMatchObject({ detected: true, json_valid: true, name_correct: true, exact: true, uses_result: true });
  });

  it("stops after maxRounds and counts unparsable arguments as invalid", async () => {
    const fetchFn = (async () => new Response(JSON.stringify({ choices: [{ message: {
      content: "", tool_calls: [{ id: "c", type: "function", function: { name: "search", arguments: "{bad" } }] } }] }))) as unknown as typeof fetch;
    const r = await runToolLoop({ baseUrl: "http://x/v1", model: "m", tools: MOCK_TOOLS, runTool: runMockTool,
                                  messages: [{ role: "user", content: "q" }], fetchFn, maxRounds: 2 });
    expect(r.trace.filter((t) => t.kind === "model").length).toBe(2);
    expect(r.final).toBeNull();
    expect(r.first).toEqual({ calls: [], invalid_blocks: 1 });
  });
});

describe("MCP client", () => {
  it("calls fetch as a plain function: a browser's fetch called as a method of another object throws", async () => {
    const bodies: { method: string }[] = [];
    // window.fetch throws "Illegal invocation" unless `this` is the window (or undefined); Node's fetch does not
    // check, so this stand-in does what the browser does
    const browserFetch = async function (this: unknown, _u: string, init: RequestInit) {
      if (this !== undefined && this !== globalThis) throw new TypeError("Failed to execute 'fetch' on 'Window': Illegal invocation");
      const body = JSON.parse(init.body as string);
      bodies.push(body);
      const result = body.method === "tools/list"
        ? { tools: [{ name: "calculator", description: "calc", inputSchema: { type: "object", properties: { expression: { type: "string" } }, required: ["expression"] } }] }
        : body.method === "tools/call" ? { structuredContent: { result: { expression: "6*7", result: 42 } } } : {};
      return new Response(JSON.stringify({ jsonrpc: "2.0", id: body.id, result }), { status: 200 });
    } as unknown as typeof fetch;
    const client = new McpClient("http://127.0.0.1:8999/mcp", "tok", browserFetch);
    const tools = await client.listTools();
    expect(tools.map((t) => t.function.name)).toEqual(["calculator"]);
    expect(await client.call("calculator", { expression: "6*7" })).toEqual({ expression: "6*7", result: 42 });
    expect(bodies.map((b) => b.method)).toEqual(["initialize", "tools/list", "tools/call"]);
  });
});

describe("scoring = eval_tool_call.py", () => {
  it("canonical is Python's json.dumps(sort_keys=True, ensure_ascii=False)", () => {
    expect(canonical({ b: 1, a: ["北京", 2] })).toBe('{"a": ["北京", 2], "b": 1}');
  });

  it("aggregates like aggregate()", () => {
    const exp = [{ name: "get_weather", arguments: { city: "北京" } }];
    const good = scoreCase(exp, { calls: exp, invalid_blocks: 0 }, "晴", [{ city: "北京", condition: "晴 sunny" }], "北京天气");
    const wrongArgs = scoreCase(exp, { calls: [{ name: "get_weather", arguments: { city: "上海" } }], invalid_blocks: 0 }, null, [], "北京天气");
    const noCallOk = scoreCase([], { calls: [], invalid_blocks: 0 }, "你好", [], "你好");
    const noCallBad = scoreCase([], { calls: [], invalid_blocks: 1 }, null, [], "你好");
    const a = aggregate([good, wrongArgs, noCallOk, noCallBad]);
    expect(a).toEqual({ cases: 4, should_call: 2, should_not_call: 2, call_detection: 1, no_call_accuracy: 0.5,
      json_validity: 1, tool_name_accuracy: 1, argument_exact_match: 0.5, argument_key_f1: 0.5, final_uses_result: 0 });
  });
});
