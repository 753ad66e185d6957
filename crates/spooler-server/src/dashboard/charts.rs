//! The dashboard's charts, drawn on the server as inline SVG (no script, nothing fetched): the
//! `/stats` page (what finished per minute, hour or day, and run and wait percentiles per queue
//! and kind) and the overview's five-minute sparklines.

use super::pages::{Frame, layout};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use spooler::Stats;
use spooler::core::stats::{ChartPoint, Granularity};
use std::time::Duration;

/// The bars' drawing area, in SVG units (scaled to the page's width).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;

/// What the `/stats` page shows.
pub(crate) struct StatsView<'a> {
    pub stats: &'a Stats,
    pub queue: &'a str,
    pub kind: &'a str,
}

/// `/stats`.
pub(crate) fn stats_page(frame: &Frame<'_>, view: &StatsView<'_>) -> Markup {
    let s = view.stats;
    let span = |g: Granularity| match g {
        Granularity::Minute => "last hour, per minute",
        Granularity::Hour => "7 days, per hour",
        Granularity::Day => "90 days, per day",
    };
    let link = |g: Granularity| {
        super::pages::query(&[
            ("granularity", g.as_str()),
            ("queue", view.queue),
            ("kind", view.kind),
        ])
    };
    let total = |f: fn(&ChartPoint) -> u64| s.points.iter().map(f).sum::<u64>();
    layout(
        frame,
        "Throughput",
        html! {
            h1 { "Throughput and latency" }
            nav.tabs aria-label="span" {
                @for g in Granularity::ALL {
                    @if g == s.granularity {
                        strong aria-current="page" { (span(g)) }
                    } @else {
                        a href={ "stats" (link(g)) } { (span(g)) }
                    }
                }
            }
            form.filters method="get" action="stats" {
                input type="hidden" name="granularity" value=(s.granularity.as_str());
                label { "queue " input name="queue" value=(view.queue) size="12"; }
                label { "kind " input name="kind" value=(view.kind) size="12"; }
                button type="submit" { "Show" }
            }
            p.muted {
                (total(|p| p.completed)) " completed · " (total(|p| p.failed)) " failed · "
                (total(|p| p.cancelled)) " cancelled · "
                @match s.rolled_until {
                    Some(at) => { "counted up to " (super::pages::time(at)) }
                    None => { "nothing rolled up yet: the maintenance leader counts finished jobs every 15 s, a minute once it has closed" }
                }
            }
            (bars(&s.points, s.granularity))
            h2 { "Run and wait time" }
            @if s.latencies.is_empty() {
                p.muted { "No job finished in this span." }
            } @else {
                table.latency {
                    thead {
                        tr { th rowspan="2" { "queue" } th rowspan="2" { "kind" } th.num rowspan="2" { "finished" } th.num rowspan="2" { "failed" } th colspan="3" { "run" } th colspan="3" { "wait" } }
                        tr { th.num { "p50" } th.num { "p95" } th.num { "p99" } th.num { "p50" } th.num { "p95" } th.num { "p99" } }
                    }
                    tbody {
                        @for l in &s.latencies {
                            tr {
                                td { (l.queue) }
                                td { (l.kind) }
                                td.num { (l.finished) }
                                td.num { (l.failed) }
                                @for d in l.run.iter().chain(&l.wait) {
                                    td.num { (millis(*d)) }
                                }
                            }
                        }
                    }
                }
                p.muted { "Percentiles are read from histograms with buckets about 9% wide: each figure is within that of the true value. Wait is from when a job was due to when its last attempt started." }
            }
        },
    )
}

/// Stacked bars: completed at the bottom, then failed, then cancelled; each bar's title says
/// its counts.
fn bars(points: &[ChartPoint], g: Granularity) -> Markup {
    let n = points.len().max(1) as f64;
    let peak = points
        .iter()
        .map(|p| p.completed + p.failed + p.cancelled)
        .max()
        .unwrap_or(0);
    let max = peak.max(1) as f64;
    let w = WIDTH / n;
    let label = |at: DateTime<Utc>| match g {
        Granularity::Minute => at.format("%H:%M").to_string(),
        Granularity::Hour => at.format("%b %d %H:00").to_string(),
        Granularity::Day => at.format("%b %d").to_string(),
    };
    html! {
        figure.chart {
            div.peak { "peak " (peak) " per " (g.as_str()) }
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label={ "jobs finished per " (g.as_str()) } preserveAspectRatio="none" {
                line.axis x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) {}
                @for (i, p) in points.iter().enumerate() {
                    @let x = i as f64 * w;
                    @let mut y = HEIGHT;
                    g {
                        title { (label(p.at)) " UTC: " (p.completed) " completed, " (p.failed) " failed, " (p.cancelled) " cancelled" }
                        @for (class, count) in [("completed", p.completed), ("failed", p.failed), ("cancelled", p.cancelled)] {
                            @if count > 0 {
                                @let h = count as f64 / max * (HEIGHT - 4.0);
                                @let top = { y -= h; y };
                                rect class=(class) x=(fmt(x + 0.5)) y=(fmt(top)) width=(fmt((w - 1.0).max(0.5))) height=(fmt(h)) {}
                            }
                        }
                        // An invisible full-height bar, so the title shows wherever the pointer is.
                        rect.hover x=(fmt(x)) y="0" width=(fmt(w)) height=(HEIGHT) {}
                    }
                }
            }
            @if let (Some(first), Some(last)) = (points.first(), points.last()) {
                div.axis { span { (label(first.at)) " UTC" } span { (label(last.at)) " UTC" } }
            }
            figcaption {
                span.key.completed { "completed" } " " span.key.failed { "failed" } " " span.key.cancelled { "cancelled" }
            }
        }
    }
}

/// A sparkline of jobs finished per minute (`counts`, oldest first).
pub(crate) fn sparkline(counts: &[u64]) -> Markup {
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (w, h) = (60.0, 16.0);
    let step = w / (counts.len().max(2) - 1) as f64;
    let points: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            format!(
                "{},{}",
                fmt(i as f64 * step),
                fmt(h - 1.0 - c as f64 / max * (h - 2.0))
            )
        })
        .collect();
    let words: Vec<String> = counts.iter().map(u64::to_string).collect();
    html! {
        svg.spark viewBox="0 0 60 16" width="60" height="16" role="img" aria-label={ "jobs finished per minute, last " (counts.len()) " minutes: " (words.join(", ")) } {
            title { "finished per minute, oldest first: " (words.join(", ")) }
            polyline points=(points.join(" ")) {}
        }
    }
}

/// A coordinate with one decimal.
fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

/// A percentile as people read it: `0.8 ms`, `340 ms`, `2.1 s`, `3.0 min`; `—` when none.
fn millis(d: Option<Duration>) -> String {
    let Some(d) = d else {
        return "—".into();
    };
    let ms = d.as_secs_f64() * 1000.0;
    match ms {
        ms if ms < 10.0 => format!("{ms:.1} ms"),
        ms if ms < 1000.0 => format!("{ms:.0} ms"),
        ms if ms < 60_000.0 => format!("{:.1} s", ms / 1000.0),
        ms if ms < 3_600_000.0 => format!("{:.1} min", ms / 60_000.0),
        ms => format!("{:.1} h", ms / 3_600_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_read_in_units_people_use() {
        assert_eq!(millis(None), "—");
        assert_eq!(millis(Some(Duration::from_micros(830))), "0.8 ms");
        assert_eq!(millis(Some(Duration::from_millis(340))), "340 ms");
        assert_eq!(millis(Some(Duration::from_millis(2100))), "2.1 s");
        assert_eq!(millis(Some(Duration::from_secs(180))), "3.0 min");
    }

    #[test]
    fn a_sparkline_spans_its_box() {
        let svg = sparkline(&[0, 5, 10]).into_string();
        assert!(
            svg.contains(r#"points="0.0,15.0 30.0,8.0 60.0,1.0""#),
            "{svg}"
        );
        assert!(svg.contains("0, 5, 10"), "{svg}");
    }
}
