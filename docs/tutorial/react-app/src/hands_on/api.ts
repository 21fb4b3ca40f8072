/**
 * Talking to the training manager (scripts/serve_train_manager.py): every request carries the token in the
 * Authorization header (never in the URL); the log stream is read with fetch() + a streaming SSE parser, so it can
 * send that header too and resume with Last-Event-ID after a dropped connection.
 */

export type Manager = { base: string; token: string };

const STORE_BASE = "mm-manager-base";
const STORE_TOKEN = "mm-manager-token";

/** The manager the user connected to in this browser tab (sessionStorage: gone when the tab closes). */
export function savedManager(): Manager {
  return { base: sessionStorage.getItem(STORE_BASE) ?? "", token: sessionStorage.getItem(STORE_TOKEN) ?? "" };
}

export function saveManager(m: Manager): void {
  sessionStorage.setItem(STORE_BASE, m.base);
  sessionStorage.setItem(STORE_TOKEN, m.token);
}

export function apiUrl(m: Manager, path: string): string {
  return m.base.replace(/\/+$/, "") + path;
}

export class ApiError extends Error {
  status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** True when a reply is a web page rather than an API answer: what a static host (GitHub Pages, `vite preview`,
 * `python -m http.server`) sends for /api/... (its 404 page), or an index.html fallback with status 200. */
export function isHtmlReply(resp: Response, text: string): boolean {
  return (resp.headers.get("content-type") ?? "").includes("text/html") || /^\s*<(!doctype|html|head|body)/i.test(text);
}

export const START_MANAGER = "python scripts/serve_train_manager.py";

/** The message for a page served without the manager behind it (instead of the host's whole 404 page). */
export function noManagerMessage(url: string, status: number): string {
  return `${url} 回复的是网页（HTTP ${status}），不是训练管理接口：本页可能在静态主机上（如 GitHub Pages），` +
    `训练需要一个运行中的管理服务。启动 ${START_MANAGER}，打开它打印的地址（或把它的地址填到上面）。 / ` +
    `${url} answered with a web page (HTTP ${status}), not the training manager's API: this page is probably on a ` +
    `static host such as GitHub Pages, and training needs a running manager. Start one with \`${START_MANAGER}\` ` +
    `and open the address it prints (or enter its URL above).`;
}

// JSON from the manager: each caller names the shape it reads
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function api<T = any>(m: Manager, path: string, init: RequestInit = {}, fetchFn = fetch): Promise<T> {
  const headers: Record<string, string> = { Authorization: `Bearer ${m.token}` };
  if (init.body) headers["Content-Type"] = "application/json";
  const url = apiUrl(m, path);
  let resp: Response;
  try {
    resp = await fetchFn(url, { ...init, headers: { ...headers, ...(init.headers as Record<string, string> | undefined) } });
  } catch (e) {
    throw new ApiError(0, `cannot reach the manager at ${url}: ${(e as Error).message}. ` +
      `Is it running (${START_MANAGER}) and is the URL right?`);
  }
  const text = await resp.text();
  if (isHtmlReply(resp, text)) throw new ApiError(resp.status, noManagerMessage(url, resp.status));
  let data: { detail?: string } | null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    throw new ApiError(resp.status, `${url}: HTTP ${resp.status}, not JSON: ${text.slice(0, 200)}`);
  }
  if (!resp.ok) throw new ApiError(resp.status, data?.detail ?? `HTTP ${resp.status}`);
  return data as T;
}

export type SSEEvent = { id?: string; event: string; data: string };

/**
 * Incremental server-sent-events parser (the WHATWG rules that matter here): feed it text as it arrives, in any
 * chunking; it returns the complete events. Comment lines (": heartbeat") are counted, not returned.
 */
export class SSEParser {
  private buf = "";
  private data: string[] = [];
  private event = "";
  private id: string | undefined;
  lastId: string | undefined;
  comments = 0;

  feed(chunk: string): SSEEvent[] {
    this.buf += chunk;
    const out: SSEEvent[] = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (!m) break;
      // a lone \r at the very end may be the first half of \r\n: wait for more
      if (m[0] === "\r" && m.index === this.buf.length - 1) break;
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      if (line === "") {
        if (this.data.length) {
          const ev: SSEEvent = { event: this.event || "message", data: this.data.join("\n") };
          if (this.id !== undefined) ev.id = this.id;
          out.push(ev);
        }
        this.data = [];
        this.event = "";
        continue;
      }
      if (line.startsWith(":")) {
        this.comments++;
        continue;
      }
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.event = value;
      else if (field === "id") this.id = this.lastId = value;
    }
    return out;
  }
}

export type LogHandlers = {
  onLine: (text: string, id: string | undefined) => void;
  onEnd?: () => void;
  onError?: (message: string) => void;
};

/**
 * Follow a run's log until its `end` event or until `signal` aborts. After a dropped connection it reconnects
 * with Last-Event-ID (the offset of the last line received), so no line is lost or repeated.
 */
export async function followLog(m: Manager, runId: string, h: LogHandlers, signal: AbortSignal,
                                fetchFn = fetch, retryMs = 1500): Promise<void> {
  let lastId: string | undefined;
  while (!signal.aborted) {
    const parser = new SSEParser();
    try {
      const headers: Record<string, string> = { Authorization: `Bearer ${m.token}`, Accept: "text/event-stream" };
      if (lastId !== undefined) headers["Last-Event-ID"] = lastId;
      const resp = await fetchFn(apiUrl(m, `/api/train/logs?run_id=${encodeURIComponent(runId)}`),
                                 { headers, signal });
      if (!resp.ok || !resp.body) {
        const text = await resp.text();
        let detail = text;
        try { detail = JSON.parse(text).detail; } catch { /* plain text */ }
        h.onError?.(detail || `HTTP ${resp.status}`);
        if (resp.status >= 400 && resp.status < 500) return; // our request is wrong: retrying will not help
      } else {
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const ev of parser.feed(decoder.decode(value, { stream: true }))) {
            if (ev.event === "end") {
              h.onEnd?.();
              return;
            }
            if (ev.event === "message") {
              lastId = ev.id ?? lastId;
              h.onLine(ev.data, ev.id);
            }
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      h.onError?.(`log stream interrupted (${(e as Error).message}); reconnecting`);
    }
    await new Promise((r) => setTimeout(r, retryMs));
  }
}
