import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { act, cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import TrainingPanel from "./TrainingPanel";
import type { StageInfo } from "./flags";

/** A fake training manager behind fetch(): JSON for the REST routes, a log stream that stays open until aborted. */
const RUN_ID = "20261206-170000-abc123";
const flag = (name: string, type: "int" | "float" | "str", def: unknown, group = "optimisation / 优化") => ({
  name, dest: name, type, default: def, choices: null, help: `${name} help`, group, kind: name === "data_path" ? "path" : "value",
  alias_of: null, roots: name === "data_path" ? ["dataset"] : null, refused_reason: null,
});
const STAGES: StageInfo[] = [{
  name: "pretrain", script: "trainer/train_pretrain.py", description: "pretraining",
  flags: [flag("batch_size", "int", 32), flag("learning_rate", "float", 5e-4), flag("max_steps", "int", 0),
          flag("data_path", "str", null, "data / 数据")] as StageInfo["flags"],
}];

type Call = { url: string; method: string };
let calls: Call[];
let run: Record<string, unknown>;

function fakeManager() {
  return vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input);
    calls.push({ url, method: init?.method ?? "GET" });
    const json = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
    const path = url.replace(/^https?:\/\/[^/]+/, "");
    if (path.startsWith("/api/train/logs")) {
      // an open SSE stream: one line, then nothing until the page aborts it
      const signal = init?.signal;
      return new Response(new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode("id: 5\ndata: step 1/10 loss 8.0\n\n"));
          signal?.addEventListener("abort", () => c.error(new DOMException("aborted", "AbortError")));
        },
      }), { status: 200, headers: { "content-type": "text/event-stream" } });
    }
    if (path === "/api/status") return json({ devices: { kind: "cpu", count: 1, source: "torch", devices: [] }, run: { id: RUN_ID } });
    if (path === "/api/datasets") return json({ datasets: [{ name: "pretrain_hq.jsonl", path: "dataset/pretrain_hq.jsonl", size_bytes: 1024 }] });
    if (path === "/api/weights") return json({ weights: [] });
    if (path === "/api/runs") return json({ runs: [run] });
    if (path === "/api/stages") return json({ stages: STAGES });
    if (path === `/api/runs/${RUN_ID}`) return json({ run });
    if (path.startsWith(`/api/runs/${RUN_ID}/metrics`)) return json({ points: [] });
    return json({ detail: `no route ${path}` }, 404);
  });
}

beforeEach(() => {
  calls = [];
  run = { id: RUN_ID, stage: "pretrain", status: "running", flags: {}, argv: [], nproc: 1, started_at: 1_800_000_000,
          ended_at: null, exit_code: null, weight: "out/pretrain_512.pth",
          progress: { step: 7, total_steps: 10, loss: 7.5, tokens_per_s: 1000, eta_s: 42, percent: 70, epoch: 0, lr: 5e-4, mfu_percent: null } };
  sessionStorage.clear();
  vi.stubGlobal("fetch", fakeManager());
});

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

async function connected() {
  render(<TrainingPanel />);
  fireEvent.change(screen.getByPlaceholderText(/this page's server/), { target: { value: "http://127.0.0.1:8999" } });
  fireEvent.change(screen.getByLabelText("token"), { target: { value: "tok" } });
  fireEvent.click(screen.getByText("连接 / Connect"));
  await screen.findByText("已连接 / connected");
  await waitFor(() => expect(screen.getByTestId("log").textContent).toContain("step 1/10"));
}

const logRequests = () => calls.filter((c) => c.url.includes("/api/train/logs"));

describe("training panel", () => {
  it("typing in the manager URL or token field does not restart the log stream of the shown run", async () => {
    await connected();
    const before = logRequests().length;
    expect(before).toBe(1);
    const urlField = screen.getByPlaceholderText(/this page's server/);
    for (const typed of ["h", "ht", "htt"]) fireEvent.change(urlField, { target: { value: typed } });
    for (const typed of ["x", "xy"]) fireEvent.change(screen.getByLabelText("token"), { target: { value: typed } });
    await act(async () => { await new Promise((r) => setTimeout(r, 50)); });
    expect(logRequests().length).toBe(before);
    // nothing went to a half-typed address
    expect(calls.filter((c) => /^(h|ht|htt)\/api/.test(c.url))).toEqual([]);
    expect(screen.getByTestId("log").textContent).toContain("step 1/10");
  });

  it("shows a flag error at its field and removes it once the field is fixed", async () => {
    await connected();
    const field = screen.getByLabelText("--batch_size");
    fireEvent.change(field, { target: { value: "4.5" } });
    expect(field.getAttribute("aria-invalid")).toBe("true");
    expect(document.getElementById("flag-batch_size-error")!.textContent).toBe("--batch_size: an integer");
    fireEvent.change(field, { target: { value: "4" } });
    expect(document.getElementById("flag-batch_size-error")).toBeNull();
    expect(field.getAttribute("aria-invalid")).toBeNull();
  });

  it("refuses a field of spaces, a number past the trainer's bound and a data file the manager does not have", async () => {
    run = { ...run, status: "finished" }; // Start is enabled only without a live run
    await connected();
    const start = screen.getByText("开始 / Start") as HTMLButtonElement;
    await waitFor(() => expect(start.disabled).toBe(false));
    fireEvent.change(screen.getByLabelText("--max_steps"), { target: { value: " " } });
    expect(document.getElementById("flag-max_steps-error")!.textContent).toMatch(/only spaces/);
    expect(start.disabled).toBe(true);
    fireEvent.change(screen.getByLabelText("--max_steps"), { target: { value: "" } });
    fireEvent.change(screen.getByLabelText("--batch_size"), { target: { value: "70000" } });
    expect(document.getElementById("flag-batch_size-error")!.textContent).toBe("--batch_size: at most 65536 (the manager refuses more)");
    expect(screen.getByText(/batch_size help · 范围 \/ range 1 – 65536/)).toBeTruthy();
    fireEvent.change(screen.getByLabelText("--batch_size"), { target: { value: "8" } });
    fireEvent.change(screen.getByLabelText("--data_path"), { target: { value: "dataset/missing.jsonl" } });
    expect(document.getElementById("flag-data_path-error")!.textContent).toMatch(/dataset\/missing\.jsonl is not in the manager's dataset list/);
    expect(start.disabled).toBe(true);
    fireEvent.change(screen.getByLabelText("--data_path"), { target: { value: "dataset/pretrain_hq.jsonl" } });
    expect(start.disabled).toBe(false);
    expect(calls.filter((c) => c.method === "POST")).toEqual([]);
  });

  it("keeps the history row's steps current and shows no ETA once the run has stopped", async () => {
    await connected();
    const row = () => screen.getByRole("link", { name: RUN_ID }).closest("tr")!;
    await waitFor(() => expect(row().textContent).toContain("7/10"));
    expect(screen.getByTestId("run-status").textContent).toContain("ETA");
    // the run moves on; the table was loaded at connect time and is not reloaded while the run goes on
    run = { ...run, progress: { ...(run.progress as object), step: 9 } };
    await waitFor(() => expect(row().textContent).toContain("9/10"), { timeout: 4000 });
    run = { ...run, status: "stopped", exit_code: -15 };
    await waitFor(() => expect(screen.getByTestId("run-status").textContent).toMatch(/^stopped/), { timeout: 4000 });
    expect(screen.getByTestId("run-status").textContent).not.toContain("ETA");
  });
});
