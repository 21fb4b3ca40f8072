// @vitest-environment node
import { describe, expect, it } from "vitest";
import { followLog, SSEParser } from "./api";

const STREAM = "retry: 2000\n\nid: 10\ndata: step 1/3 loss 8.7\n\n: heartbeat\n\nid: 21\ndata: step 2/3 loss 8.6\n\n" +
  "id: 32\r\ndata: a\r\ndata: b\r\n\r\nevent: end\ndata: {}\n\n";

describe("SSEParser", () => {
  it("gives the same events however the text is chunked", () => {
    const whole = new SSEParser().feed(STREAM);
    expect(whole).toEqual([
      { id: "10", event: "message", data: "step 1/3 loss 8.7" },
      { id: "21", event: "message", data: "step 2/3 loss 8.6" },
      { id: "32", event: "message", data: "a\nb" },
      { id: "32", event: "end", data: "{}" },
    ]);
    for (const size of [1, 2, 3, 7, 13]) {
      const p = new SSEParser();
      const got = [];
      for (let i = 0; i < STREAM.length; i += size) got.push(...p.feed(STREAM.slice(i, i + size)));
      expect(got).toEqual(whole);
      expect(p.comments).toBe(1);
      expect(p.lastId).toBe("32");
    }
  });

  it("keeps an incomplete event until its blank line arrives", () => {
    const p = new SSEParser();
    expect(p.feed("id: 5\ndata: half")).toEqual([]);
    expect(p.feed(" line\n")).toEqual([]);
    expect(p.feed("\n")).toEqual([{ id: "5", event: "message", data: "half line" }]);
  });
});

function sse(body: string, status = 200): Response {
  return new Response(new ReadableStream({
    start(c) { c.enqueue(new TextEncoder().encode(body)); c.close(); },
  }), { status, headers: { "content-type": "text/event-stream" } });
}

describe("followLog", () => {
  it("reconnects with Last-Event-ID after a drop: every line once, in order", async () => {
    const requests: Record<string, string>[] = [];
    const answers = [
      sse("id: 10\ndata: one\n\nid: 20\ndata: two\n\n"), // connection drops without `end`
      sse("id: 30\ndata: three\n\nevent: end\ndata: {}\n\n"),
    ];
    const fetchFn = (async (_url: string, init: RequestInit) => {
      requests.push(init.headers as Record<string, string>);
      return answers.shift()!;
    }) as unknown as typeof fetch;
    const lines: string[] = [];
    let ended = false;
    await followLog({ base: "http://m", token: "tok" }, "run1", {
      onLine: (t) => lines.push(t), onEnd: () => { ended = true; },
    }, new AbortController().signal, fetchFn, 1);
    expect(lines).toEqual(["one", "two", "three"]);
    expect(ended).toBe(true);
    expect(requests[0]["Authorization"]).toBe("Bearer tok");
    expect(requests[0]["Last-Event-ID"]).toBeUndefined();
    expect(requests[1]["Last-Event-ID"]).toBe("20");
  });

  it("stops on a 4xx answer and reports the manager's message", async () => {
    const fetchFn = (async () => new Response(JSON.stringify({ detail: "missing or wrong token" }), { status: 401 })) as unknown as typeof fetch;
    const errors: string[] = [];
    await followLog({ base: "", token: "bad" }, "r", { onLine: () => undefined, onError: (m) => errors.push(m) },
                    new AbortController().signal, fetchFn, 1);
    expect(errors).toEqual(["missing or wrong token"]);
  });
});
