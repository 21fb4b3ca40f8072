import { Suspense, useEffect, useRef, useState } from "react";
import type React from "react";
import { teachingTabs } from "./tabs";
import { handsOnTabs } from "./hands_on";
import "./tabs/tabs.css";

export type TabEntry = { id: string; title: string; component: React.ComponentType };

/** All tabs in display order: the teaching tabs (issue 19) first, then the hands-on tabs. */
export function allTabs(): TabEntry[] {
  return [...teachingTabs, ...handsOnTabs];
}

const TABS = allTabs();

function tabFromHash(): string {
  const id = decodeURIComponent(window.location.hash.replace(/^#\/?/, ""));
  return TABS.some((t) => t.id === id) ? id : (TABS[0]?.id ?? "");
}

type Theme = "light" | "dark";

function initialTheme(): Theme {
  const saved = localStorage.getItem("mm-theme");
  if (saved === "light" || saved === "dark") return saved;
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

/** Where an arrow key in the tab bar goes (WAI-ARIA tabs pattern: wraps around; Home/End to the ends). */
export function nextTabIndex(key: string, index: number, count: number): number | null {
  if (key === "ArrowRight") return (index + 1) % count;
  if (key === "ArrowLeft") return (index - 1 + count) % count;
  if (key === "Home") return 0;
  if (key === "End") return count - 1;
  return null;
}

export default function App() {
  const [active, setActive] = useState(tabFromHash);
  const [theme, setTheme] = useState<Theme>(initialTheme);
  const tabRefs = useRef<Record<string, HTMLAnchorElement | null>>({});

  useEffect(() => {
    const onHash = () => setActive(tabFromHash());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);

  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("mm-theme", theme);
  }, [theme]);

  // on a phone the tab bar scrolls sideways: keep the active tab in view (the 9th tab starts ~700 px to the right)
  useEffect(() => {
    tabRefs.current[active]?.scrollIntoView?.({ block: "nearest", inline: "nearest" });
  }, [active]);

  const select = (id: string, focus: boolean) => {
    setActive(id);
    window.history.replaceState(null, "", `#${id}`);
    if (focus) tabRefs.current[id]?.focus();
  };

  const onKeyDown = (e: React.KeyboardEvent, index: number) => {
    const next = nextTabIndex(e.key, index, TABS.length);
    if (next === null) return;
    e.preventDefault();
    select(TABS[next].id, true);
  };

  const current = TABS.find((t) => t.id === active) ?? TABS[0];
  const Current = current?.component;
  return (
    <div className="app">
      <header className="app-header">
        <span className="brand">MiniMind</span>
        <nav className="tab-bar" role="tablist" aria-label="MiniMind tutorial">
          {TABS.map((t, i) => {
            const selected = t.id === current?.id;
            return (
              <a
                key={t.id}
                id={`tab-${t.id}`}
                role="tab"
                href={`#${t.id}`}
                ref={(el) => { tabRefs.current[t.id] = el; }}
                aria-selected={selected}
                aria-controls="tabpanel"
                tabIndex={selected ? 0 : -1}
                className={selected ? "tab active" : "tab"}
                onClick={() => setActive(t.id)}
                onKeyDown={(e) => onKeyDown(e, i)}
              >
                {t.title}
              </a>
            );
          })}
        </nav>
        <button
          className="theme-toggle"
          title="切换主题 / toggle theme"
          aria-label="切换主题 / toggle theme"
          onClick={() => setTheme(theme === "dark" ? "light" : "dark")}
        >
          {theme === "dark" ? "☀" : "☾"}
        </button>
      </header>
      <main className="app-main" role="tabpanel" id="tabpanel" aria-labelledby={current ? `tab-${current.id}` : undefined}>
        <Suspense fallback={<p className="muted" role="status">加载中 / loading…</p>}>
          {Current ? <Current /> : null}
        </Suspense>
      </main>
    </div>
  );
}
