import type React from "react";

/**
 * Teaching tabs (issue 19). App.tsx renders these first, in this order, before the hands-on tabs
 * (training panel, tool playground). Each entry: a stable id (used in the URL hash), the tab title,
 * and the component to render.
 */
export const teachingTabs: { id: string; title: string; component: React.ComponentType }[] = [];
