// @vitest-environment node
import { describe, expect, it } from "vitest";
import { api } from "./api";
import { endpointProblem, explainFailure, listModels, requestSignal, resolveEndpoint } from "./endpoint";
import { runToolLoop, runMockTool } from "./tools";

const ORIGIN = "https://someone.github.io";
const html404 = () => new Response("<!DOCTYPE html><html><head><title>Page not found · GitHub Pages</title></head><body>" +
  "x".repeat(5000) + "</body></html>", { status: 404, headers: { "content-type": "text/html; charset=utf-8" } });

describe("a page on a static host", () => {
  it("Connect says the page needs a running manager instead of showing the host's 404 page", async () => {
    const err = await api({ base: "", token: "t" }, "/api/status", {}, (async () => html404()) as typeof fetch).catch((e) => e);
    expect(err.message).toContain("python scripts/serve_train_manager.py");
    expect(err.message).toMatch(/static host such as GitHub Pages/);
    expect(err.message).not.toContain("<");
    expect(err.message.length).toBeLessThan(500);
  });

  it("an index.html fallback with status 200 is not taken for an answer", async () => {
    const page = async () => new Response("<html><body>app</body></html>", { status: 200, headers: { "content-type": "text/html" } });
    await expect(api({ base: "", token: "t" }, "/api/runs", {}, page as typeof fetch)).rejects.toThrow(/not the training manager's API/);
  });

  it("the tool tab's same-origin proxy preset gives the same advice for the OpenAI server", async () => {
    const signal = new AbortController().signal;
    const err = await listModels("https://someone.github.io/repo/v1", "", signal, ORIGIN, (async () => html404()) as typeof fetch).catch((e) => e);
    const msg = explainFailure(err, "https://someone.github.io/repo/v1", signal, 120, ORIGIN);
    expect(msg).toContain(`python scripts/serve_openai_api.py --cors_origins ${ORIGIN}`);
    expect(msg).not.toContain("<!DOCTYPE");
    const loop = await runToolLoop({ baseUrl: "https://someone.github.io/repo/v1", model: "m", tools: [], runTool: runMockTool,
      messages: [{ role: "user", content: "hi" }], fetchFn: (async () => html404()) as typeof fetch, origin: ORIGIN }).catch((e) => e);
    expect(explainFailure(loop, "", signal, 120, ORIGIN)).toMatch(/answered with a web page \(HTTP 404\)/);
  });
});

describe("tool playground requests", () => {
  it("a non-URL is refused before anything is sent (it would go to this page's own host)", () => {
    expect(endpointProblem("localhost:8998")).toMatch(/not a URL|only http/);
    expect(endpointProblem("my server")).toMatch(/is not a URL/);
    expect(endpointProblem("ftp://x/v1")).toMatch(/only http/);
    expect(endpointProblem("")).toMatch(/enter an endpoint/);
    expect(endpointProblem("http://127.0.0.1:8998/v1")).toBeNull();
    expect(endpointProblem("./v1")).toBeNull();
    expect(resolveEndpoint("./v1", "https://a.io/repo/index.html")).toBe("https://a.io/repo/v1");
    expect(resolveEndpoint(" http://h:1/v1/ ", "https://a.io/")).toBe("http://h:1/v1");
  });

  it("server down: says what to start and which origin to allow, not only 'Failed to fetch'", () => {
    const msg = explainFailure(new TypeError("Failed to fetch"), "http://127.0.0.1:8998/v1", new AbortController().signal, 120, ORIGIN);
    expect(msg).toContain("python scripts/serve_openai_api.py");
    expect(msg).toContain(`--cors_origins ${ORIGIN}`);
  });

  it("a wrong URL that answers without models says so", async () => {
    const signal = new AbortController().signal;
    const empty = (async () => new Response(JSON.stringify({ object: "list", data: [] }), { status: 200 })) as typeof fetch;
    await expect(listModels("http://h/v1", "", signal, ORIGIN, empty)).rejects.toThrow(/listed no models/);
    const other = (async () => new Response(JSON.stringify({ hello: "world" }), { status: 200 })) as typeof fetch;
    await expect(listModels("http://h/", "", signal, ORIGIN, other)).rejects.toThrow(/ending in \/v1/);
    const missing = (async () => new Response(JSON.stringify({ detail: "Not Found" }), { status: 404 })) as typeof fetch;
    await expect(listModels("http://h/v2", "", signal, ORIGIN, missing)).rejects.toThrow(/HTTP 404 .*path \/v1/);
    const ok = (async () => new Response(JSON.stringify({ data: [{ id: "minimind" }] }), { status: 200 })) as typeof fetch;
    expect(await listModels("http://h/v1", "", signal, ORIGIN, ok)).toEqual(["minimind"]);
  });

  it("Cancel says cancelled, and a slow server times out with a message", async () => {
    const hang = ((_u: string, init: RequestInit) => new Promise((_, reject) => {
      init.signal!.addEventListener("abort", () => reject(init.signal!.reason));
    })) as unknown as typeof fetch;
    const user = requestSignal(60);
    const p = listModels("http://h/v1", "", user.signal, ORIGIN, hang).catch((e) => e);
    user.cancel();
    expect(explainFailure(await p, "http://h/v1", user.signal, 60, ORIGIN)).toBe("已取消 / cancelled");
    user.done();
    const slow = requestSignal(0.05);
    const e = await listModels("http://h/v1", "", slow.signal, ORIGIN, hang).catch((x) => x);
    expect(explainFailure(e, "http://h/v1", slow.signal, 1, ORIGIN)).toMatch(/no answer within 1 s/);
    slow.done();
  });
});
