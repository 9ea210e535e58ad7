//! Server-drawn SVG charts for the admin dashboard.
//!
//! Everything here returns a complete `<svg>` element as a `String`, ready to be put into the
//! page as-is:
//!
//! * [`line`]: a time-series chart (600 wide, fixed `viewBox`, scaled by CSS with
//!   `width:100%;height:auto`) with a title, a y axis of "nice" ticks starting at 0 and carrying
//!   the unit, horizontal grid lines, an x axis of UTC clock times, one path per series (gaps
//!   break the line, optionally drawn as steps) and a legend with each series' latest value.
//! * [`sparkline`]: a tiny 120x24 line without axes for tables.
//! * [`bar`]: a horizontal used/total bar with a text label such as "512 MB / 1.9 GB".
//!
//! The page runs under a strict Content-Security-Policy, so no `style` attribute or element is
//! ever emitted: colours come from the page's CSS through these classes: `chart`, `chart-title`,
//! `utc`, `grid`, `axis`, `ytick`, `xtick`, `line` plus the series class (e.g. `s1`), `legend`,
//! `nodata`, `spark`, `spark-base`, `usage`, `bar`, `bar-used`, `hot`, `bar-label`.
//! All text (and every caller-supplied attribute value) is XML-escaped.

use std::fmt::Write as _;

/// One line of a chart: `points` are (time in ms since the Unix epoch, value); `None` is a gap
/// (no data then), drawn as a break in the line. Points are expected in ascending time order.
pub struct Series<'a> {
    /// Shown in the legend.
    pub name: &'a str,
    /// CSS class for the line, e.g. "s1", "s2", "s3".
    pub class: &'a str,
    pub points: &'a [(u64, Option<f64>)],
}

pub struct Chart<'a> {
    /// E.g. "Requests".
    pub title: &'a str,
    /// E.g. "req/s", "ms", "instances"; shown in the title, the legend and (if short) the y ticks.
    pub unit: &'a str,
    /// X axis start (e.g. now - 1 hour).
    pub from_ms: u64,
    /// X axis end (now).
    pub to_ms: u64,
    pub series: Vec<Series<'a>>,
    /// Draw as steps (for counts like instances) instead of straight segments.
    pub step: bool,
    /// Y values are whole numbers (instance counts): ticks are integers only.
    pub integer: bool,
}

// Geometry of the line chart, in viewBox units.
const W: f64 = 600.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 572.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 160.0;
const LEGEND_Y: f64 = 192.0;
const ROW_H: f64 = 16.0;

/// Candidate x tick spacings in seconds.
const TIME_STEPS: [u64; 18] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
];

/// The whole `<svg>` element of a time-series chart (see the module docs).
pub fn line(chart: &Chart) -> String {
    let from = chart.from_ms;
    let span = chart.to_ms.saturating_sub(from).max(1);
    let to = from.saturating_add(span);
    let in_range = |t: u64| t >= from && t <= to;
    let values = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(t, _)| in_range(*t))
    };
    let has_data = values().any(|&(_, v)| clean(v).is_some());
    let max = values().filter_map(|&(_, v)| clean(v)).fold(0.0, f64::max);
    let ticks = y_ticks(max, chart.integer);
    let top = ticks.last().copied().unwrap_or(1.0).max(f64::MIN_POSITIVE);
    let xp = |t: u64| LEFT + (t - from) as f64 / span as f64 * (RIGHT - LEFT);
    let yp = |v: f64| BOTTOM - v / top * (BOTTOM - TOP);
    let short_unit = chart.unit.chars().count() <= 5;
    let with_unit = |n: String| join_unit(&n, chart.unit);

    // Legend layout first: it decides the height of the viewBox.
    let mut legend = String::new();
    let (mut lx, mut ly) = (LEFT, LEGEND_Y);
    for s in &chart.series {
        let latest = s.points.iter().rev().find_map(|&(_, v)| clean(v));
        let text = format!(
            "{} {}",
            s.name,
            latest.map_or("–".to_string(), |v| with_unit(number(v)))
        );
        let width = 22.0 + text.chars().count() as f64 * 6.2 + 16.0;
        if lx + width > W && lx > LEFT {
            lx = LEFT;
            ly += ROW_H;
        }
        let _ = write!(
            legend,
            r#"<line class="line {c}" x1="{lx:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke-width="3"/><text class="legend" x="{tx:.1}" y="{ly:.1}">{t}</text>"#,
            c = escape(s.class),
            y = ly - 4.0,
            x2 = lx + 18.0,
            tx = lx + 22.0,
            t = escape(&text),
        );
        lx += width;
    }
    let height = ly + 8.0;

    let mut svg = String::new();
    let title = match chart.unit {
        "" => chart.title.to_string(),
        // "Instances", not "Instances (instances)".
        unit if chart.title.eq_ignore_ascii_case(unit) => chart.title.to_string(),
        unit => format!("{} ({unit})", chart.title),
    };
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {height}" width="100%" role="img" aria-label="{a}" font-family="sans-serif" font-size="11"><text class="chart-title" x="4" y="16" font-size="13" font-weight="bold">{t}</text><text class="utc" x="{ux}" y="16" text-anchor="end">UTC</text>"#,
        a = escape(chart.title),
        t = escape(&title),
        ux = W - 4.0,
    );
    for &v in &ticks {
        let label = if short_unit {
            with_unit(number(v))
        } else {
            number(v)
        };
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}" stroke-width="1"/><text class="ytick" x="{x}" y="{ty:.1}" text-anchor="end">{l}</text>"#,
            y = yp(v),
            x = LEFT - 6.0,
            ty = yp(v) + 4.0,
            l = escape(&label),
        );
    }
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}" stroke-width="1"/>"#
    );
    let with_secs = span < 10 * 60 * 1000;
    for t in x_ticks(from, to) {
        let _ = write!(
            svg,
            r#"<line class="axis" x1="{x:.1}" y1="{BOTTOM}" x2="{x:.1}" y2="{y2}" stroke-width="1"/><text class="xtick" x="{x:.1}" y="{ty}" text-anchor="middle">{l}</text>"#,
            x = xp(t),
            y2 = BOTTOM + 4.0,
            ty = BOTTOM + 16.0,
            l = clock(t, with_secs),
        );
    }
    for s in &chart.series {
        let pts = s.points.iter().filter(|(t, _)| in_range(*t));
        let d = path_d(
            pts.map(|&(t, v)| clean(v).map(|v| (xp(t), yp(v)))),
            chart.step,
        );
        if !d.is_empty() {
            let _ = write!(
                svg,
                r#"<path class="line {c}" d="{d}" fill="none" stroke-width="1.5" stroke-linecap="round" stroke-linejoin="round"/>"#,
                c = escape(s.class),
            );
        }
    }
    if !has_data {
        let _ = write!(
            svg,
            r#"<text class="nodata" x="{x}" y="{y}" text-anchor="middle">no data yet</text>"#,
            x = (LEFT + RIGHT) / 2.0,
            y = (TOP + BOTTOM) / 2.0 + 4.0,
        );
    }
    svg.push_str(&legend);
    svg.push_str("</svg>");
    svg
}

/// A small inline sparkline (no axes) of equally spaced values; `None` = gap. `title` becomes a
/// `<title>` child (tooltip). Fixed viewBox 120x24, class="spark". Empty or all-None: a flat
/// baseline.
pub fn sparkline(values: &[Option<f64>], title: &str) -> String {
    let max = values.iter().filter_map(|&v| clean(v)).fold(0.0, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let n = values.len();
    let x = |i: usize| {
        if n <= 1 {
            119.0
        } else {
            1.0 + i as f64 * 118.0 / (n - 1) as f64
        }
    };
    let d = path_d(
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| clean(v).map(|v| (x(i), 23.0 - v / max * 22.0))),
        false,
    );
    let body = if d.is_empty() {
        r#"<line class="spark-base" x1="0" y1="23" x2="120" y2="23" stroke-width="1"/>"#.to_string()
    } else {
        format!(
            r#"<path class="line" d="{d}" fill="none" stroke-width="1.5" stroke-linecap="round" stroke-linejoin="round"/>"#
        )
    };
    let t = escape(title);
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="spark" viewBox="0 0 120 24" width="120" height="24" role="img" aria-label="{t}"><title>{t}</title>{body}</svg>"#
    )
}

/// A horizontal usage bar of `used` out of `total` (SVG) with a label right of it (HTML), e.g.
/// "0.5 / 2 cpus" or, for `unit == "MB"`, "512 MB / 1.9 GB" (GB with one decimal from 1024 MB).
/// The filled part has class "bar-used", plus "hot" from 90 % on. `total` 0: empty bar, "0 <unit>".
pub fn bar(used: f64, total: f64, unit: &str) -> String {
    let valid = total.is_finite() && total > 0.0;
    let ratio = if valid {
        (clean(Some(used)).unwrap_or(0.0) / total).min(1.0)
    } else {
        0.0
    };
    let label = if !valid {
        join_unit("0", unit)
    } else if unit == "MB" {
        format!("{} / {}", megabytes(used), megabytes(total))
    } else {
        format!("{} / {}", number(used), join_unit(&number(total), unit))
    };
    let class = if ratio >= 0.9 {
        "bar-used hot"
    } else {
        "bar-used"
    };
    let l = escape(&label);
    // The label is HTML beside the drawing, so it keeps its size on a phone.
    format!(
        r#"<span class="usage"><svg xmlns="http://www.w3.org/2000/svg" class="usage-bar" viewBox="0 0 200 12" role="img" aria-label="{l}"><rect class="bar" x="0" y="0" width="200" height="12" rx="2"/><rect class="{class}" x="0" y="0" width="{w:.1}" height="12" rx="2"/></svg><span class="bar-label">{l}</span></span>"#,
        w = ratio * 200.0,
    )
}

/// Compact number formatting used by all of the above ("0", "0.25", "12", "1.5k" for ≥ 10000,
/// "2.3M" for ≥ 10^6): at most 2 decimals (1 with a k/M suffix), trailing zeros trimmed.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return "0".to_string();
    }
    let r = (x * 100.0).round() / 100.0;
    let s = if x != 0.0 && r == 0.0 {
        trim(format!("{x:.4}")) // tiny but non-zero: keep a little precision
    } else if r.abs() < 1e4 {
        trim(format!("{r:.2}"))
    } else if ((x / 100.0).round() / 10.0).abs() < 1e3 {
        format!("{}k", trim(format!("{:.1}", (x / 100.0).round() / 10.0)))
    } else {
        format!("{}M", trim(format!("{:.1}", (x / 1e5).round() / 10.0)))
    };
    if s == "-0" {
        "0".to_string()
    } else {
        s
    }
}

/// A wake's timeline as a waterfall: one row per step (`held`, `wake`, `revive`, ... with its
/// time in ms since the wake call; `held` is negative), a bar from the previous step to it, and
/// how long that took. Shows at a glance where a cold start's time went.
pub fn waterfall(steps: &[(String, f64)]) -> String {
    // Narrow, so that it stays legible when a phone shrinks it.
    const ROW: f64 = 16.0;
    const X0: f64 = 62.0;
    const X1: f64 = 330.0;
    let start = steps.first().map(|(_, ms)| ms.min(0.0)).unwrap_or(0.0);
    let end = steps.iter().map(|(_, ms)| *ms).fold(0.0_f64, f64::max);
    let span = (end - start).max(1.0);
    let x = |ms: f64| X0 + (ms - start) / span * (X1 - X0);
    let h = ROW * steps.len() as f64 + 4.0;
    let mut out = format!(
        "<svg class=\"chart waterfall\" viewBox=\"0 0 400 {h}\" width=\"100%\" role=\"img\" aria-label=\"wake timeline\">"
    );
    let mut prev = start;
    for (i, (name, ms)) in steps.iter().enumerate() {
        let y = ROW * i as f64 + 2.0;
        let (a, b) = (x(prev.min(*ms)), x(*ms));
        let took = (ms - prev).max(0.0);
        out.push_str(&format!(
            "<text class=\"ytick\" x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\">{}</text>\
             <rect class=\"bar-used step{}\" x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"10\"/>\
             <text class=\"bar-label\" x=\"{:.1}\" y=\"{}\" font-size=\"11\">{} ms</text>",
            X0 - 6.0,
            y + 10.0,
            escape(name),
            i % 2,
            y + 1.0,
            (b - a).max(1.5),
            b.max(a + 1.5) + 4.0,
            y + 10.0,
            if i == 0 { number(ms.round()) } else { format!("+{}", number(took.round())) },
        ));
        prev = *ms;
    }
    out.push_str("</svg>");
    out
}

/// XML-escapes text and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Finite values only, clamped at 0.
fn clean(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite()).map(|v| v.max(0.0))
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn join_unit(n: &str, unit: &str) -> String {
    if unit.is_empty() {
        n.to_string()
    } else {
        format!("{n} {unit}")
    }
}

fn megabytes(mb: f64) -> String {
    if mb >= 1024.0 {
        format!("{} GB", number((mb / 1024.0 * 10.0).round() / 10.0))
    } else {
        format!("{} MB", number(mb))
    }
}

/// 0 and up to 4 more ticks at a 1/2/5 x 10^k spacing covering `max` (integers only if asked).
fn y_ticks(max: f64, integer: bool) -> Vec<f64> {
    let max = if max > 0.0 && max.is_finite() {
        max
    } else {
        1.0
    };
    let intervals = |step: f64| (max / step - 1e-9).ceil().max(1.0);
    let mut mag = 10f64.powf((max / 4.0).log10().floor());
    let step = loop {
        let fits = |s: &f64| (!integer || *s >= 1.0) && intervals(*s) <= 4.0;
        if let Some(s) = [1.0, 2.0, 5.0].iter().map(|m| m * mag).find(fits) {
            break s;
        }
        mag *= 10.0;
    };
    (0..=intervals(step) as u32)
        .map(|i| f64::from(i) * step)
        .collect()
}

/// At most 7 x ticks at a round time spacing; `from` and `to` if no spacing gives 2..=7 ticks.
fn x_ticks(from: u64, to: u64) -> Vec<u64> {
    for secs in TIME_STEPS {
        let step = secs * 1000;
        let first = from.div_ceil(step) * step;
        let count = if first > to {
            0
        } else {
            (to - first) / step + 1
        };
        if count <= 7 {
            if count < 2 {
                break;
            }
            return (0..count).map(|i| first + i * step).collect();
        }
    }
    vec![from, to]
}

/// "HH:MM" (or "HH:MM:SS") of a Unix time in ms, UTC.
fn clock(ms: u64, with_secs: bool) -> String {
    let s = ms / 1000 % 86_400;
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    if with_secs {
        format!("{h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}")
    }
}

/// SVG path data through the points; `None` starts a new sub-path. Single points are drawn as
/// a zero-length segment (a dot with round caps).
fn path_d(points: impl Iterator<Item = Option<(f64, f64)>>, step: bool) -> String {
    let mut d = String::new();
    let mut run = 0;
    for p in points.chain(std::iter::once(None)) {
        match p {
            None => {
                if run == 1 {
                    d.push_str(" h0");
                }
                run = 0;
            }
            Some((x, y)) => {
                let sep = if d.is_empty() { "" } else { " " };
                let _ = match (run, step) {
                    (0, _) => write!(d, "{sep}M{x:.1} {y:.1}"),
                    (_, true) => write!(d, " H{x:.1} V{y:.1}"),
                    (_, false) => write!(d, " L{x:.1} {y:.1}"),
                };
                run += 1;
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000; // 2023-11-14 22:13:20 UTC
    const HOUR: u64 = 3_600_000;

    /// Contents of the `<text class="...">` elements with exactly this class.
    fn texts(svg: &str, class: &str) -> Vec<String> {
        let pat = format!(r#"<text class="{class}""#);
        svg.match_indices(&pat)
            .filter_map(|(i, _)| {
                let rest = &svg[i..];
                Some(rest[rest.find('>')? + 1..rest.find("</text>")?].to_string())
            })
            .collect()
    }

    fn chart<'a>(series: Vec<Series<'a>>, span: u64, integer: bool) -> Chart<'a> {
        let (title, unit, from_ms, to_ms, step) = ("Requests", "req/s", T0, T0 + span, integer);
        Chart {
            title,
            unit,
            from_ms,
            to_ms,
            series,
            step,
            integer,
        }
    }

    fn one<'a>(
        name: &'a str,
        points: &'a [(u64, Option<f64>)],
        span: u64,
        step: bool,
    ) -> Chart<'a> {
        chart(
            vec![Series {
                name,
                class: "s2",
                points,
            }],
            span,
            step,
        )
    }

    #[test]
    fn a_waterfall_shows_each_step_and_its_time() {
        let steps = vec![
            ("held".to_string(), -3.0),
            ("wake".to_string(), 0.0),
            ("ready".to_string(), 95.4),
            ("<x>".to_string(), 100.0),
        ];
        let svg = waterfall(&steps);
        assert!(svg.contains(">held<") && svg.contains(">-3 ms<"));
        assert!(svg.contains(">+95 ms<") && svg.contains(">+5 ms<"));
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("style"));
    }

    #[test]
    fn y_ticks_are_nice_and_carry_the_unit() {
        let pts = [(T0, Some(3.0)), (T0 + 60_000, Some(37.0))];
        let svg = line(&one("all", &pts, HOUR, false));
        assert_eq!(
            texts(&svg, "ytick"),
            ["0 req/s", "10 req/s", "20 req/s", "30 req/s", "40 req/s"]
        );
        assert!(texts(&svg, "legend")[0] == "all 37 req/s");
        assert_eq!(y_ticks(1.0, false), [0.0, 0.5, 1.0]);
        assert_eq!(y_ticks(41.0, false), [0.0, 20.0, 40.0, 60.0]);
    }

    #[test]
    fn integer_charts_have_integer_ticks() {
        let pts = [(T0, Some(1.0)), (T0 + 60_000, Some(1.0))];
        let svg = line(&one("web", &pts, HOUR, true));
        assert_eq!(texts(&svg, "ytick"), ["0 req/s", "1 req/s"]);
        assert_eq!(y_ticks(3.0, true), [0.0, 1.0, 2.0, 3.0]);
        assert!(y_ticks(0.0, true).iter().all(|t| t.fract() == 0.0));
    }

    #[test]
    fn x_labels_are_utc_clock_times() {
        assert_eq!(clock(T0, false), "22:13");
        assert_eq!(clock(T0, true), "22:13:20");
        let hour = line(&chart(vec![], HOUR, false));
        let labels = texts(&hour, "xtick");
        assert!((4..=7).contains(&labels.len()), "{labels:?}");
        assert_eq!(labels.first().map(String::as_str), Some("22:20"));
        assert_eq!(labels.last().map(String::as_str), Some("23:10"));
        assert!(hour.contains(">UTC</text>"));
        let five = texts(&line(&chart(vec![], 5 * 60_000, false)), "xtick");
        assert!((4..=7).contains(&five.len()), "{five:?}");
        assert_eq!(five[0], "22:14:00");
        assert!(five.iter().all(|l| l.len() == 8));
    }

    #[test]
    fn gaps_split_the_line_and_steps_use_h_v() {
        let pts = [
            (T0, Some(1.0)),
            (T0 + 1000, Some(2.0)),
            (T0 + 2000, None),
            (T0 + 3000, Some(2.0)),
            (T0 + 4000, Some(5.0)),
        ];
        let svg = line(&one("a", &pts, HOUR, false));
        let d = svg
            .split(r#"<path class="line s2" d=""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("");
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert!(!svg.contains("no data yet"));
        let stepped = line(&one("a", &pts, HOUR, true));
        assert!(stepped.contains(" H") && stepped.contains(" V"));
    }

    #[test]
    fn no_data_escaping_and_no_inline_styles() {
        let pts = [(T0, None), (T0 + 1000, None)];
        let svg = line(&Chart {
            title: "A & B",
            unit: "ms",
            from_ms: T0,
            to_ms: T0 + HOUR,
            series: vec![Series {
                name: "<b>",
                class: "s1\"",
                points: &pts,
            }],
            step: false,
            integer: false,
        });
        assert!(svg.contains("no data yet"));
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains(r#"aria-label="A &amp; B""#) && svg.contains(r#"role="img""#));
        assert!(svg.contains("s1&quot;"));
        let outputs = [
            svg,
            sparkline(&[Some(1.0), None, Some(3.0)], "<x>"),
            sparkline(&[], "0 req/s now"),
            bar(1.0, 2.0, "cpus"),
        ];
        for out in &outputs {
            assert!(!out.contains("style"), "{out}");
        }
        assert!(
            outputs[1].contains("<title>&lt;x&gt;</title>")
                && outputs[1].contains(r#"viewBox="0 0 120 24""#)
        );
        assert!(outputs[2].contains("spark-base") && !outputs[2].contains("<path"));
    }

    #[test]
    fn bars() {
        assert!(bar(512.0, 1946.0, "MB").contains(">512 MB / 1.9 GB</span>"));
        assert!(bar(2048.0, 4096.0, "MB").contains(">2 GB / 4 GB</span>"));
        let cpu = bar(0.5, 2.0, "cpus");
        assert!(
            cpu.contains(">0.5 / 2 cpus</span>")
                && cpu.contains(r#"class="bar-used" x="0" y="0" width="50.0""#)
        );
        assert!(bar(0.95, 1.0, "cpus").contains(r#"class="bar-used hot""#));
        assert!(!bar(0.5, 1.0, "cpus").contains("hot"));
        let empty = bar(3.0, 0.0, "cpus");
        assert!(empty.contains(">0 cpus</span>") && empty.contains(r#"width="0.0""#));
    }

    #[test]
    fn numbers_are_compact() {
        let cases = [
            (0.0, "0"),
            (0.25, "0.25"),
            (12.0, "12"),
            (41.237, "41.24"),
            (9999.0, "9999"),
            (15_000.0, "15k"),
            (12_345.0, "12.3k"),
            (2_340_000.0, "2.3M"),
            (-0.001, "-0.001"),
            (-0.00001, "0"),
            (f64::NAN, "0"),
        ];
        for (x, want) in cases {
            assert_eq!(number(x), want, "{x}");
        }
    }
}
