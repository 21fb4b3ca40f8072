/**
 * How the tool playground talks to an OpenAI-compatible endpoint without leaving the user with a raw browser
 * error: the URL is checked before anything is sent (a bare word would otherwise go to this page's own host),
 * every request has a timeout and a Cancel, and each failure becomes one sentence that says what to do.
 */
import { isHtmlReply } from "./api";

export const START_API = "python scripts/serve_openai_api.py";
export const DEFAULT_TIMEOUT_S = 120; // a 26M model on CPU answers a 512-token tool round in ~10-30 s

/** "./v1" and "/v1" are relative to this page (the docker web proxy); anything else must be an absolute http(s) URL. */
export function resolveEndpoint(u: string, pageHref: string): string {
  const t = u.trim();
  return t.startsWith("./") || t.startsWith("/") ? new URL(t, pageHref).toString().replace(/\/$/, "") : t.replace(/\/+$/, "");
}

/** Why `u` cannot be used as an endpoint, or null when it can. */
export function endpointProblem(u: string): string | null {
  const t = u.trim();
  if (!t) return "先填写端点地址，例如 http://127.0.0.1:8998/v1 / enter an endpoint URL such as http://127.0.0.1:8998/v1";
  if (t.startsWith("./") || t.startsWith("/")) return null;
  let url: URL;
  try {
    url = new URL(t);
  } catch {
    return `"${t}" 不是网址 / is not a URL: write it as http://host:port/v1`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return `"${t}": only http:// and https:// endpoints work here`;
  return null;
}

/** The user's Cancel plus a timeout, as one signal; `reason()` says which one fired ("cancelled" / "timeout"). */
export function requestSignal(timeoutS: number): { signal: AbortSignal; cancel: () => void; done: () => void } {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort("timeout"), Math.max(1, timeoutS) * 1000);
  return { signal: ctl.signal, cancel: () => ctl.abort("cancelled"), done: () => clearTimeout(timer) };
}

export class EndpointError extends Error {}

/** A reply that is a web page: a static host's 404 page, or the docker proxy path on a host without the proxy. */
export function htmlReplyMessage(url: string, status: number, origin: string): string {
  return `${url} 回复的是网页（HTTP ${status}），不是 OpenAI 接口 / answered with a web page (HTTP ${status}), not ` +
    "the OpenAI API. On a static host such as GitHub Pages there is no server behind this page (the same-origin " +
    "proxy ./v1 exists only in the docker web deployment): start one with " +
    `\`${START_API} --cors_origins ${origin}\` and pick "our server (8998)".`;
}

/** One check of a fetch() reply: throws EndpointError with a readable message when it is not an API answer. */
export function checkReply(resp: Response, text: string, url: string, origin: string): void {
  if (isHtmlReply(resp, text)) throw new EndpointError(htmlReplyMessage(url, resp.status, origin));
  if (!resp.ok) {
    let detail = text.slice(0, 300);
    try {
      const j = JSON.parse(text);
      detail = j?.error?.message ?? j?.detail ?? detail;
    } catch { /* plain text */ }
    const hint = resp.status === 401 ? " (wrong or missing API key)" : resp.status === 404 ? " (is the URL's path /v1?)" : "";
    throw new EndpointError(`HTTP ${resp.status} from ${url}${hint}: ${detail}`);
  }
}

/** Any failure of a request to `url` -> one sentence for the page. */
export function explainFailure(e: unknown, url: string, signal: AbortSignal | undefined, timeoutS: number, origin: string): string {
  if (signal?.aborted && signal.reason === "cancelled") return "已取消 / cancelled";
  if (signal?.aborted && signal.reason === "timeout") {
    return `${url} 在 ${timeoutS} 秒内没有回答 / no answer within ${timeoutS} s: the server may be busy with a long ` +
      "generation; raise the timeout, lower max rounds, or check the server's log";
  }
  if (e instanceof EndpointError) return e.message;
  if (e instanceof TypeError) {
    // fetch() rejects with a bare TypeError ("Failed to fetch") for a refused connection and for a CORS refusal alike
    return `连不上 / cannot reach ${url}: is the server running (\`${START_API}\`), and does it allow this page's ` +
      `origin (\`--cors_origins ${origin}\`)? The browser only says: ${e.message}`;
  }
  return e instanceof Error ? e.message : String(e);
}

/** GET {base}/models -> model ids; an answer without any model is an error that says so. */
export async function listModels(base: string, apiKey: string, signal: AbortSignal, origin: string,
                                 fetchFn: typeof fetch = fetch): Promise<string[]> {
  const url = base + "/models";
  const resp = await fetchFn(url, { headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {}, signal });
  const text = await resp.text();
  checkReply(resp, text, url, origin);
  let data: { data?: { id?: unknown }[] };
  try {
    data = JSON.parse(text);
  } catch {
    throw new EndpointError(`${url} answered, but not with JSON: ${text.slice(0, 120)}`);
  }
  const ids = Array.isArray(data?.data) ? data.data.map((m) => String(m?.id ?? "")).filter(Boolean) : [];
  if (!ids.length) {
    throw new EndpointError(`${url} 没有列出任何模型 / listed no models: is this an OpenAI-compatible endpoint ` +
      "ending in /v1 (e.g. http://127.0.0.1:8998/v1)?");
  }
  return ids;
}
