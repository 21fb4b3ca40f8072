import type React from "react";
import TrainingPanel from "./TrainingPanel";
import ToolPlayground from "./ToolPlayground";

/** The hands-on tabs (issue 18): they talk to a running training manager / OpenAI-compatible server. */
export const handsOnTabs: { id: string; title: string; component: React.ComponentType }[] = [
  { id: "training", title: "训练管理", component: TrainingPanel },
  { id: "tools", title: "工具测试", component: ToolPlayground },
];
