import { lazy } from "react";
import type React from "react";

/** The hands-on tabs (issue 18): they talk to a running training manager / OpenAI-compatible server. Loaded when
 * first opened (own chunks), like the teaching tabs. */
export const handsOnTabs: { id: string; title: string; component: React.ComponentType }[] = [
  { id: "training", title: "训练管理", component: lazy(() => import("./TrainingPanel")) },
  { id: "tools", title: "工具测试", component: lazy(() => import("./ToolPlayground")) },
];
