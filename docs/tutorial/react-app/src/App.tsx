import { useEffect, useState } from "react";
import type React from "react";
import { teachingTabs } from "./tabs";
import { handsOnTabs } from "./hands_on";

export type TabEntry = { id: string; title: string; component: React.ComponentType };

/** All tabs in display order: the teaching tabs (issue 19) first, then the hands-on tabs. */
export function allTabs(): TabEntry[] {
  return [...teachingTabs, ...handsOnTabs];
}

function tabFromHash(tabs: TabEntry[]): string {
  const id = decodeURIComponent(window.location.hash.replace(/^#\/?/, ""));
  return tabs.some((t) => t.id === id) ? id : (tabs[0]?.id ?? "");
}

type Theme = "light" | "dark";

function initialTheme(): Theme {
  const saved = localStorage.getItem("mm-theme");
  if (saved === "light" || saved === "dark") return saved;
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export default function App() {
  const tabs = allTabs();
  const [active, setActive] = useState(() => tabFromHash(tabs));
  const [theme, setTheme] = useState<Theme>(initialTheme);

  useEffect(() => {
    const onHash = () => setActive(tabFromHash(tabs));
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  });

  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("mm-theme", theme);
  }, [theme]);

  const current = tabs.find((t) => t.id === active) ?? tabs[0];
  const Current = current?.component;
  return (
    <div className="app">
      <header className="app-header">
        <span className="brand">MiniMind</span>
        <nav className="tab-bar" role="tablist">
          {tabs.map((t) => (
            <a
              key={t.id}
              role="tab"
              href={`#${t.id}`}
              aria-selected={t.id === current?.id}
              className={t.id === current?.id ? "tab active" : "tab"}
              onClick={() => setActive(t.id)}
            >
              {t.title}
            </a>
          ))}
        </nav>
        <button
          className="theme-toggle"
          title="切换主题 / toggle theme"
          onClick={() => setTheme(theme === "dark" ? "light" : "dark")}
        >
          {theme === "dark" ? "☀" : "☾"}
        </button>
      </header>
      <main className="app-main" role="tabpanel">
        {Current ? <Current /> : null}
      </main>
    </div>
  );
}
