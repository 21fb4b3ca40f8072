"""The tutorial's static build (docs/tutorial/react-app/dist, built here when missing or stale) served under a
sub-path, http://127.0.0.1:PORT/minimind/, as GitHub Pages serves it under /<repo>/, and driven in headless
Chromium: every teaching tab opens from the tab bar without console or page errors and shows its content, with a
screenshot at desktop (1280x800) and phone (390x844) width in $TUTORIAL_SHOTS (default: pytest's tmp_path); the
tokenization tab shows, for text typed into it, exactly the ids of the Python tokenizer in model/. Skipped only
when Chromium or Playwright is missing (CI installs both)."""
import json
import os
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from browser_util import APP, ensure_built, needs_browser
from model.checkpoint import load_tokenizer
from scripts.tutorial.text_facts import CHAT_CASES, PARITY_TEXTS

pytestmark = [pytest.mark.slow, needs_browser]

SUB_PATH = "/minimind/"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
HANDS_ON = ["training", "tools"]  # need a running training manager / model server: tests/test_train_manager_browser.py


# Nothing may be wider than the screen; wide code and heat maps scroll inside their own box. Measured against the
# viewport we asked for: a mobile browser widens its layout viewport to fit the content, so innerWidth grows with
# the overflow. Gives the page's width and the outermost elements or text runs that stick out (an unbreakable
# "[1,2,3,...]" overflows as a text node, not as an element), e.g. "P.muted 530px: ids: [1,2,...", and anything
# drawn across the border of its .card.
WIDER_THAN_SCREEN = """w => {
  const clipped = n => {
    for (let e = n.parentElement; e; e = e.parentElement)
      if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(e).overflowX)) return true;
    return false;
  };
  const right = n => {
    if (n.nodeType === 1) return n.getBoundingClientRect().right;
    const r = document.createRange(); r.selectNodeContents(n); return r.getBoundingClientRect().right;
  };
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
  const out = [];
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    if (right(n) <= w + 1 || clipped(n) || right(n.parentElement) > w + 1) continue;
    const e = n.nodeType === 1 ? n : n.parentElement;
    out.push(`${e.tagName}${e.className ? '.' + String(e.className).replace(/ /g, '.') : ''} ` +
             `${Math.round(right(n))}px: ${n.textContent.slice(0, 40)}`);
  }
  for (const card of document.querySelectorAll('.card')) {  // a table pushing through its card's border
    const edge = card.getBoundingClientRect().right;
    for (const e of card.children) {
      const past = e.getBoundingClientRect().right - edge;
      if (past > 0) out.push(`${e.tagName}.${e.className} past its card's edge by ${past}px`);
    }
  }
  return {width: document.documentElement.scrollWidth, offenders: out};
}"""


def teaching_tab_ids() -> list:
    """The ids in src/tabs/index.ts's teachingTabs, in order (read from the source, not copied here)."""
    text = (APP / "src" / "tabs" / "index.ts").read_text(encoding="utf-8")
    block = text[text.index("teachingTabs"):]
    return re.findall(r'\{ id: "([^"]+)"', block[:block.index("];")])


class SubPathHandler(SimpleHTTPRequestHandler):
    """dist/ under SUB_PATH only: any request outside it is a 404, so an absolute /assets/... URL in the build
    (a base other than "./") fails the test instead of happening to work at the root."""
    requests: list

    def do_GET(self):
        self.requests.append(self.path)
        if not self.path.startswith(SUB_PATH):
            self.send_error(404, "outside " + SUB_PATH)
            return
        self.path = "/" + self.path[len(SUB_PATH):]
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    dist = ensure_built()
    handler = type("Handler", (SubPathHandler,), {"requests": []})  # this server's own request log
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(dist)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}{SUB_PATH}", handler.requests
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("TUTORIAL_SHOTS") or tmp_path_factory.mktemp("tutorial_shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def watched_page(context) -> tuple:
    """A page that records console errors, uncaught exceptions, failed requests and HTTP errors."""
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"requestfailed: {r.url} {r.failure}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    return page, problems


@pytest.mark.parametrize("width", list(VIEWPORTS))
def test_every_teaching_tab_renders_at_a_sub_path(site, browser, shots, width):
    base, served = site
    ids = teaching_tab_ids()
    assert len(ids) == 10, ids
    phone = width == "phone"
    context = browser.new_context(viewport=VIEWPORTS[width], is_mobile=phone, has_touch=phone)
    page, problems = watched_page(context)
    try:
        page.goto(base)
        try:
            page.wait_for_selector("[role=tab]", timeout=15000)
        except Exception as e:  # playwright's TimeoutError: say why (e.g. the bundle 404s outside the sub-path)
            raise AssertionError(f"the app did not render at {base}: {problems}") from e
        assert page.eval_on_selector_all("[role=tab]", "els => els.map(e => e.getAttribute('href'))") == \
            [f"#{i}" for i in ids + HANDS_ON]
        # the bundle and the stylesheet were loaded from under the sub-path, relative to index.html
        assets = page.evaluate("[...document.querySelectorAll('script[src], link[rel=stylesheet]')]"
                               ".map(e => e.src || e.href)")
        assert assets and all(a.startswith(base + "assets/") for a in assets), assets
        headings = {}
        for tab_id in ids:
            page.click(f"[role=tab][href='#{tab_id}']")
            page.wait_for_selector(f"[role=tab][href='#{tab_id}'][aria-selected=true]")
            assert page.url == f"{base}#{tab_id}"
            heading = page.locator("main h2").first
            heading.wait_for(state="visible")
            headings[tab_id] = heading.inner_text()
            text = page.inner_text("main")
            assert len(text) > 200, f"{tab_id}: only {len(text)} characters of content"
            page.eval_on_selector_all("main details", "els => els.forEach(e => e.open = true)")  # check them too
            wide = page.evaluate(WIDER_THAN_SCREEN, VIEWPORTS[width]["width"])
            assert wide["width"] <= VIEWPORTS[width]["width"] and not wide["offenders"], f"{tab_id} at {width}: {wide}"
            page.screenshot(path=str(shots / f"{tab_id}-{width}.png"), full_page=True)
        assert len(set(headings.values())) == len(ids), headings  # each tab showed its own content
        assert all(p.startswith(SUB_PATH) for p in served), [p for p in served if not p.startswith(SUB_PATH)]
        assert problems == []
    finally:
        context.close()


def typed_ids(page, text: str) -> tuple:
    """Type `text` into the tokenization tab; the text the page holds and the ids its token chips show."""
    box = "textarea[aria-label='text to tokenize']"
    page.fill(box, text)
    page.wait_for_function("t => document.querySelector(\"textarea[aria-label='text to tokenize']\").value === t",
                           arg=page.input_value(box))
    shown = page.eval_on_selector_all("[data-testid=token-ids] .tok-id", "els => els.map(e => Number(e.textContent))")
    return page.input_value(box), shown


def test_tokenization_tab_ids_equal_the_python_tokenizer(site, browser, shots):
    base, _ = site
    tok = load_tokenizer()

    def py_ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    tags = [t["content"] for t in json.loads((APP / "src" / "data" / "tokenizer.json").read_text("utf-8"))
            ["added_tokens"]]
    conversations = [tok.apply_chat_template(c["messages"], tokenize=False,
                                             add_generation_prompt=c["add_generation_prompt"],
                                             **{k: c[k] for k in ("tools", "enable_thinking") if k in c})
                     for c in CHAT_CASES]
    texts = PARITY_TEXTS + tags + ["".join(tags)] + conversations
    assert "<|im_start|>" in tags and any("😀" in t for t in texts) and len(conversations) == len(CHAT_CASES)

    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page, problems = watched_page(context)
    try:
        page.goto(base + "#tokenization")
        page.wait_for_selector("textarea[aria-label='text to tokenize']")
        wrong = []
        for text in texts:
            held, shown = typed_ids(page, text)
            # a textarea turns CR LF and lone CR into LF (HTML's value normalisation); that text is what is tokenised
            assert held == text.replace("\r\n", "\n").replace("\r", "\n")
            if shown != py_ids(held):
                wrong.append({"text": held, "browser": shown, "python": py_ids(held)})
        assert wrong == [], json.dumps(wrong, ensure_ascii=False, indent=1)
        assert sum(1 for t in texts if "\r" not in t) > 20

        # the tab's own chat-template switch: one user turn rendered in the browser, with and without the prompt
        question = "你好，请介绍一下你自己。"
        page.click("label:has-text('apply_chat_template')")
        for generation_prompt in (True, False):
            if not generation_prompt:
                page.click("label:has-text('add_generation_prompt')")
            _, shown = typed_ids(page, question)
            expected = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                               add_generation_prompt=generation_prompt)
            assert page.text_content("pre.card") == expected
            assert shown == py_ids(expected), (generation_prompt, shown, py_ids(expected))
        page.screenshot(path=str(shots / "tokenization-chat-template.png"), full_page=True)
        assert problems == []
    finally:
        context.close()


# ------------------------------------------------------------------------------------ a static host, a11y

def test_static_host_connect_and_proxy_say_a_server_is_needed(site, browser, shots):
    """GitHub Pages (here: a plain static server) has no /api or /v1 behind the page: Connect and the tool tab's
    same-origin proxy preset say what to start instead of showing the host's whole 404 page."""
    base, _ = site
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = context.new_page()
    try:
        page.goto(base + "#training")
        page.fill("input[aria-label=token]", "some-token")
        page.click("text=连接 / Connect")
        alert = page.wait_for_selector("[role=alert]", timeout=15000).inner_text()
        assert "python scripts/serve_train_manager.py" in alert and "GitHub Pages" in alert, alert
        assert "<" not in alert and "Error response" not in alert and len(alert) < 600, alert
        page.screenshot(path=str(shots / "training-static-host.png"), full_page=True)
        page.click("[role=tab][href='#tools']")
        page.select_option("select[aria-label='endpoint preset']", "proxy")
        page.click("text=读取 /models")
        alert = page.wait_for_selector("[role=alert]", timeout=15000).inner_text()
        assert "python scripts/serve_openai_api.py --cors_origins http://127.0.0.1:" in alert, alert
        assert "<" not in alert and len(alert) < 600, alert
        page.select_option("select[aria-label='endpoint preset']", "custom")
        page.fill("input[aria-label='custom endpoint']", "localhost:8998")
        assert "only http" in page.inner_text("[data-testid=url-problem]")
    finally:
        context.close()


def test_tab_bar_keyboard_and_the_active_tab_stays_in_view_on_a_phone(site, browser, shots):
    base, _ = site
    ids = teaching_tab_ids() + HANDS_ON
    context = browser.new_context(viewport=VIEWPORTS["phone"], is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(base + "#architecture")
        page.wait_for_selector("[role=tab][aria-selected=true]")
        page.focus("[role=tab][aria-selected=true]")
        for i in range(1, 4):
            page.keyboard.press("ArrowRight")
            page.wait_for_selector(f"[role=tab][href='#{ids[i]}'][aria-selected=true]")
            assert page.evaluate("document.activeElement.getAttribute('href')") == f"#{ids[i]}"
        assert page.url.endswith(f"#{ids[3]}")
        page.keyboard.press("End")
        page.wait_for_selector(f"[role=tab][href='#{ids[-1]}'][aria-selected=true]")
        # the last tab starts far to the right of a 390 px screen: the tab bar scrolled it into view
        box = page.eval_on_selector("[role=tab][aria-selected=true]", "e => { const r = e.getBoundingClientRect(); "
                                    "return [r.left, r.right]; }")
        assert 0 <= box[0] and box[1] <= VIEWPORTS["phone"]["width"] + 1, box
        assert page.eval_on_selector_all("[role=tab]", "els => els.filter(e => e.tabIndex === 0).length") == 1
        page.keyboard.press("Home")
        page.wait_for_selector(f"[role=tab][href='#{ids[0]}'][aria-selected=true]")
        page.goto(base + "#deployment")
        page.wait_for_selector("[role=tab][href='#deployment'][aria-selected=true]")
        page.wait_for_timeout(300)
        box = page.eval_on_selector("[role=tab][aria-selected=true]", "e => { const r = e.getBoundingClientRect(); "
                                    "return [r.left, r.right]; }")
        assert 0 <= box[0] and box[1] <= VIEWPORTS["phone"]["width"] + 1, ("opened by URL", box)
        page.screenshot(path=str(shots / "tab-bar-phone.png"))
    finally:
        context.close()


CONTRAST = """sel => {
  const rgb = s => s.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
  const lum = c => { const [r, g, b] = c.map(v => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                     return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  return [...document.querySelectorAll(sel)].map(e => {
    const st = getComputedStyle(e), a = lum(rgb(st.color)), b = lum(rgb(st.backgroundColor));
    return [e.textContent.trim().slice(0, 20), (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
  });
}"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_primary_buttons_meet_wcag_aa_contrast(site, browser, shots, theme):
    base, _ = site
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = context.new_page()
    try:
        page.goto(base + "#pipeline")
        page.evaluate(f"localStorage.setItem('mm-theme', '{theme}')")
        page.reload()  # the theme is read once, at start
        page.wait_for_selector(".btn.primary")
        assert page.evaluate("document.documentElement.dataset.theme") == theme
        ratios = page.evaluate(CONTRAST, ".btn.primary")
        assert ratios and all(r >= 4.5 for _, r in ratios), ratios
        page.screenshot(path=str(shots / f"pipeline-{theme}.png"))
    finally:
        context.close()
