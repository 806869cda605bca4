// Uptime as an inline SVG bar chart: the samples of /statistics (each says
// whether the agent was up at that moment) in equal time buckets, each bar as
// tall as the fraction of its samples that were up. The chart spans the first
// sample to the last, not the window asked for (a CVM younger than it, or
// samples seconds apart, cover less): the axis says how long that is.

import { h, s } from "./dom.js";
import { formatClock, formatSpan, parseTime, percent } from "./format.js";

const WIDTH = 480;
const HEIGHT = 88;
const GAP = 2;

/** Samples (newest first, as the API returns them) -> up to `count` buckets, oldest first. */
export function bucketize(samples, count = 48) {
  const points = samples
    .map((sample) => ({ at: parseTime(sample.timestamp), up: Boolean(sample.status) }))
    .filter((point) => point.at)
    .sort((a, b) => a.at - b.at);
  if (points.length === 0) return { buckets: [], start: null, end: null, count: 0 };
  const start = points[0].at.getTime();
  const end = points[points.length - 1].at.getTime();
  const slots = Math.min(count, points.length);
  const span = Math.max(end - start, 1);
  const buckets = Array.from({ length: slots }, () => ({ up: 0, total: 0 }));
  for (const point of points) {
    const index = Math.min(slots - 1, Math.floor(((point.at.getTime() - start) / span) * slots));
    buckets[index].total += 1;
    if (point.up) buckets[index].up += 1;
  }
  return { buckets, start: new Date(start), end: new Date(end), count: points.length };
}

/** The chart and its time axis; `label` names the CVM for assistive technology. */
export function uptimeChart(stats, label) {
  const { buckets, start, end, count } = bucketize(stats.cvm_stats || []);
  if (buckets.length === 0) {
    return h("p", { class: "empty small" }, "No uptime samples yet: the first arrives within one sampling interval.");
  }
  const slot = WIDTH / buckets.length;
  const bars = buckets.map((bucket, index) => {
    if (bucket.total === 0) return null;
    const fraction = bucket.up / bucket.total;
    const height = Math.max(3, fraction * (HEIGHT - 4));
    const tone = fraction >= 0.999 ? "bar-up" : fraction <= 0.001 ? "bar-down" : "bar-partial";
    return s(
      "rect",
      {
        class: tone,
        x: (index * slot + GAP / 2).toFixed(2),
        y: (HEIGHT - height).toFixed(2),
        width: Math.max(1, slot - GAP).toFixed(2),
        height: height.toFixed(2),
        rx: 1.5,
      },
      s("title", {}, `${percent(fraction)} up (${bucket.up} of ${bucket.total} samples)`),
    );
  });
  const summary = `Uptime of ${label}: ${percent(stats.uptime)} of ${stats.total} samples`;
  const chart = s(
    "svg",
    {
      class: "chart",
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label": summary,
    },
    s("title", {}, summary),
    [0, 0.5, 1].map((level) => {
      const y = (HEIGHT - level * (HEIGHT - 4)).toFixed(2);
      return s("line", { class: "grid-line", x1: 0, x2: WIDTH, y1: y, y2: y });
    }),
    bars,
  );
  return h(
    "div",
    {},
    chart,
    h(
      "div",
      { class: "chart-axis", "aria-hidden": "true" },
      h("span", {}, formatClock(start.toISOString())),
      h("span", { class: "chart-span" }, spanLabel(count, end - start)),
      h("span", {}, formatClock(end.toISOString())),
    ),
  );
}

/** What the chart's width stands for: "41 s of samples". */
function spanLabel(count, milliseconds) {
  return count === 1 ? "1 sample" : `${formatSpan(milliseconds)} of samples`;
}
