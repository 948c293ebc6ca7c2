//! The read-only status page served at `/` (with `--metrics-addr`):
//! endpoints and their health (from `webhook.endpoint_health`), the failed
//! attempts of the last hour with their error and status code, and attempts
//! and latency per minute over the last hour as an SVG chart drawn here.
//! Plain HTML, no JavaScript. Nothing secret: no secret, header, request
//! or response body; an endpoint's URL is shown as its origin only (a path
//! or query may carry a token).
//!
//! Must not: write to the database, or show anything a `webhook_reader`
//! could not read.

use crate::db::connect::check_extension;
use crate::db::error::DbError;
use crate::db::queries;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use std::time::SystemTime;
use tokio_postgres::Client;

/// One endpoint's line.
#[derive(Debug, Clone)]
pub(crate) struct EndpointRow {
    id: i64,
    name: String,
    origin: String,
    state: String,
    disabled_reason: Option<String>,
    attempts_1h: i64,
    success_rate_1h: Option<f64>,
    p50_ms_1h: Option<f64>,
    p95_ms_1h: Option<f64>,
    attempts_24h: i64,
    success_rate_24h: Option<f64>,
    last_success_at: Option<SystemTime>,
    last_failure_at: Option<SystemTime>,
    last_failure_status: Option<i32>,
    last_failure_error: Option<String>,
    consecutive_failures: i32,
    pending: i64,
    waiting: i64,
    oldest_open_s: Option<f64>,
}

impl EndpointRow {
    /// How the endpoint is doing, at a glance: the row's class (its
    /// colour) and the word shown with its state. An active endpoint whose
    /// last attempts failed is "failing" (red, like a disabled one): green
    /// is for endpoints that succeed.
    fn health(&self) -> (&'static str, &'static str) {
        match self.state.as_str() {
            "disabled" => ("health-down", "disabled"),
            "paused" => ("health-held", "paused"),
            "removed" => ("health-held", "removed"),
            _ if self.consecutive_failures > 0 => ("health-down", "failing"),
            _ if self.success_rate_1h.is_some_and(|r| r < 0.99) => ("health-degraded", "degraded"),
            _ => ("health-ok", "healthy"),
        }
    }
}

/// One failed attempt.
#[derive(Debug, Clone)]
pub(crate) struct FailureRow {
    at: SystemTime,
    endpoint_id: i64,
    endpoint: String,
    event_type: String,
    message_id: String,
    status_code: Option<i32>,
    error: String,
}

/// One minute of the chart.
#[derive(Debug, Clone)]
pub(crate) struct Minute {
    at: SystemTime,
    attempts: i64,
    successes: i64,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
}

/// What the page shows.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    /// pg_webhook's version and flavor (see `check_extension`).
    installed: String,
    endpoints: Vec<EndpointRow>,
    failures: Vec<FailureRow>,
    minutes: Vec<Minute>,
}

/// `scheme://host[:port]` of a URL, or a placeholder.
fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "(invalid URL)".into(),
    }
}

/// Reads everything the page shows (three statements, read-only).
pub(crate) async fn load(client: &Client) -> Result<Status, DbError> {
    let endpoints = client
        .query_typed(queries::STATUS_ENDPOINTS, &[])
        .await?
        .iter()
        .map(|r| EndpointRow {
            id: r.get(0),
            name: r.get(1),
            origin: origin(r.get::<_, &str>(2)),
            state: r.get(3),
            disabled_reason: r.get(4),
            attempts_1h: r.get(5),
            success_rate_1h: r.get(6),
            p50_ms_1h: r.get(7),
            p95_ms_1h: r.get(8),
            attempts_24h: r.get(9),
            success_rate_24h: r.get(10),
            last_success_at: r.get(11),
            last_failure_at: r.get(12),
            last_failure_status: r.get(13),
            last_failure_error: r.get(14),
            consecutive_failures: r.get(15),
            pending: r.get(16),
            waiting: r.get(17),
            oldest_open_s: r.get(18),
        })
        .collect();
    let failures = client
        .query_typed(queries::STATUS_FAILURES, &[])
        .await?
        .iter()
        .map(|r| FailureRow {
            at: r.get(0),
            endpoint_id: r.get(1),
            endpoint: r.get(2),
            event_type: r.get(3),
            message_id: r.get(4),
            status_code: r.get(5),
            error: r.get::<_, Option<String>>(6).unwrap_or_default(),
        })
        .collect();
    let minutes = client
        .query_typed(queries::STATUS_MINUTES, &[])
        .await?
        .iter()
        .map(|r| Minute {
            at: r.get(0),
            attempts: r.get(1),
            successes: r.get(2),
            p50_ms: r.get(3),
            p95_ms: r.get(4),
        })
        .collect();
    let installed = match check_extension(client).await {
        Ok(installed) => format!("pg_webhook {installed}"),
        Err(e) => e.to_string(),
    };
    Ok(Status {
        installed,
        endpoints,
        failures,
        minutes,
    })
}

/// `YYYY-MM-DD HH:MM:SS` UTC.
fn when(t: Option<SystemTime>) -> String {
    t.map_or_else(
        || "—".into(),
        |t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        },
    )
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "—".into(), |r| format!("{:.1} %", r * 100.0))
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("≤ {v:.0} ms"),
        Some(_) => "> 262 s".into(),
        None => "—".into(),
    }
}

/// The whole page.
pub(crate) fn render(status: &Status, worker_id: &str) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                // Read-only and refreshed by the browser alone: no script.
                meta http-equiv="refresh" content="10";
                title { "pg_webhook status" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "pg_webhook" }
                p.meta { "Worker " code { (worker_id) } " — " (status.installed) " — " (when(Some(SystemTime::now()))) " UTC — refreshes every 10 s" }
                h2 { "Endpoints" }
                table id="endpoints" {
                    thead { tr {
                        th { "Endpoint" } th { "State" } th { "Last hour" } th { "Success" }
                        th { "p50" } th { "p95" } th { "24 hours" } th { "Last success" }
                        th { "Last failure" } th { "Failing in a row" } th { "Pending" } th { "Waiting" } th { "Oldest open" }
                    } }
                    tbody {
                        @if status.endpoints.is_empty() {
                            tr { td colspan="13" { "No endpoint." } }
                        }
                        @for e in &status.endpoints {
                            @let (class, word) = e.health();
                            tr class=(format!("state-{} {class}", e.state)) data-endpoint=(e.id) {
                                td { strong { (e.name) } " #" (e.id) br; span.origin { (e.origin) } }
                                td {
                                    span.badge { (word) }
                                    @if e.consecutive_failures > 0 { " " small { (e.consecutive_failures) " in a row" } }
                                    @if let Some(r) = &e.disabled_reason { br; small { (r) } }
                                }
                                td.num { (e.attempts_1h) }
                                td.num { (percent(e.success_rate_1h)) }
                                td.num { (ms(e.p50_ms_1h)) }
                                td.num { (ms(e.p95_ms_1h)) }
                                td.num { (e.attempts_24h) " (" (percent(e.success_rate_24h)) ")" }
                                td { (when(e.last_success_at)) }
                                td {
                                    (when(e.last_failure_at))
                                    @if let Some(code) = e.last_failure_status { " — " (code) }
                                    @if let Some(err) = &e.last_failure_error { br; small.error { (err) } }
                                }
                                td.num { (e.consecutive_failures) }
                                td.num { (e.pending) }
                                td.num { (e.waiting) }
                                td.num { @if let Some(s) = e.oldest_open_s { (format!("{s:.0} s")) } @else { "—" } }
                            }
                        }
                    }
                }
                h2 { "Last hour, all endpoints" }
                (chart(&status.minutes))
                h2 { "Recent failures" }
                table id="failures" {
                    thead { tr { th { "Time (UTC)" } th { "Endpoint" } th { "Event" } th { "webhook-id" } th { "Status" } th { "Error" } } }
                    tbody {
                        @if status.failures.is_empty() {
                            tr { td colspan="6" { "No failed attempt in the last hour." } }
                        }
                        @for f in &status.failures {
                            tr {
                                td { (when(Some(f.at))) }
                                td { (f.endpoint) " #" (f.endpoint_id) }
                                td { (f.event_type) }
                                td { code { (f.message_id) } }
                                td.num { @if let Some(c) = f.status_code { (c) } @else { "no answer" } }
                                td.error { (f.error) }
                            }
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { margin: 0 0 4px; } h2 { margin-top: 28px; font-size: 16px; }
.meta { color: #666; margin: 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e4e4e4; vertical-align: top; }
th { background: #f6f6f6; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
.origin { color: #666; font-size: 12px; }
.error { color: #a11; }
tr.health-down td:first-child { border-left: 4px solid #c33; }
tr.health-down { background: #fdeeee; }
tr.health-degraded td:first-child { border-left: 4px solid #d90; }
tr.health-degraded { background: #fff7e6; }
tr.health-held td:first-child { border-left: 4px solid #999; }
tr.health-ok td:first-child { border-left: 4px solid #3a3; }
.badge { font-weight: 600; padding: 1px 6px; border-radius: 8px; background: #eee; }
tr.health-down .badge { background: #c33; color: #fff; }
tr.health-degraded .badge { background: #d90; color: #fff; }
tr.health-ok .badge { background: #3a3; color: #fff; }
svg text { font: 11px system-ui, sans-serif; fill: #555; }
";

/// Attempts and successes per minute (bars), and p50/p95 latency per
/// minute (points joined by lines), over the last 60 minutes, as one SVG.
fn chart(minutes: &[Minute]) -> Markup {
    const W: f64 = 900.0;
    const H: f64 = 120.0;
    const LEFT: f64 = 50.0;
    const SLOTS: f64 = 60.0;
    if minutes.is_empty() {
        return html! { p id="chart-empty" { "No attempt in the last hour." } };
    }
    let now = SystemTime::now();
    let slot_w = (W - LEFT - 10.0) / SLOTS;
    // Minute i (0 = an hour ago, 59 = this minute) starts at x(i).
    let slot_of = |m: &Minute| {
        let ago = now
            .duration_since(m.at)
            .map_or(0.0, |d| d.as_secs_f64() / 60.0);
        (SLOTS - 1.0 - ago.floor()).clamp(0.0, SLOTS - 1.0)
    };
    let x = |slot: f64| LEFT + slot * slot_w;
    let max_attempts = minutes.iter().map(|m| m.attempts).max().unwrap_or(1).max(1) as f64;
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    let max_ms = minutes
        .iter()
        .filter_map(|m| finite(m.p95_ms))
        .fold(1.0f64, f64::max);
    let top1 = 20.0;
    let top2 = top1 + H + 50.0;
    let y = |top: f64, v: f64, max: f64| top + H - H * (v / max);
    let series = |pick: &dyn Fn(&Minute) -> Option<f64>| -> Vec<(f64, f64)> {
        minutes
            .iter()
            .filter_map(|m| pick(m).map(|v| (x(slot_of(m)) + slot_w / 2.0, y(top2, v, max_ms))))
            .collect()
    };
    let p50 = series(&|m| finite(m.p50_ms));
    let p95 = series(&|m| finite(m.p95_ms));
    let points = |s: &[(f64, f64)]| {
        s.iter()
            .map(|(a, b)| format!("{a:.1},{b:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg id="chart" xmlns="http://www.w3.org/2000/svg" width=(W) height=(top2 + H + 30.0) role="img"
            aria-label="Attempts and latency per minute over the last hour" {
            text x="0" y="12" { "attempts / min (max " (max_attempts as i64) ")" }
            text x=(W - 230.0) y="12" { tspan fill="#36c" { "■ attempts" } "   " tspan fill="#3a3" { "■ successes" } }
            line x1=(LEFT) y1=(top1 + H) x2=(W - 10.0) y2=(top1 + H) stroke="#bbb" {}
            @for m in minutes {
                rect x=(format!("{:.1}", x(slot_of(m)) + 1.0)) y=(format!("{:.1}", y(top1, m.attempts as f64, max_attempts)))
                    width=(format!("{:.1}", slot_w - 2.0)) height=(format!("{:.1}", H * m.attempts as f64 / max_attempts))
                    fill="#36c" opacity="0.35" {}
                rect x=(format!("{:.1}", x(slot_of(m)) + 3.0)) y=(format!("{:.1}", y(top1, m.successes as f64, max_attempts)))
                    width=(format!("{:.1}", (slot_w - 6.0).max(1.0))) height=(format!("{:.1}", H * m.successes as f64 / max_attempts))
                    fill="#3a3" {}
            }
            text x=(LEFT) y=(top1 + H + 14.0) { "−60 min" }
            text x=(W - 40.0) y=(top1 + H + 14.0) { "now" }
            text x="0" y=(top2 - 8.0) { "latency per minute (max " (format!("{max_ms:.0}")) " ms; bucket bounds)" }
            text x=(W - 230.0) y=(top2 - 8.0) { tspan fill="#36c" { "● p50" } "   " tspan fill="#c63" { "● p95" } }
            line x1=(LEFT) y1=(top2 + H) x2=(W - 10.0) y2=(top2 + H) stroke="#bbb" {}
            polyline points=(points(&p50)) fill="none" stroke="#36c" stroke-width="1.5" {}
            polyline points=(points(&p95)) fill="none" stroke="#c63" stroke-width="1.5" {}
            @for (cx, cy) in &p50 { circle cx=(format!("{cx:.1}")) cy=(format!("{cy:.1}")) r="3" fill="#36c" {} }
            @for (cx, cy) in &p95 { circle cx=(format!("{cx:.1}")) cy=(format!("{cy:.1}")) r="3" fill="#c63" {} }
            text x=(LEFT) y=(top2 + H + 14.0) { "−60 min" }
            text x=(W - 40.0) y=(top2 + H + 14.0) { "now" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_escaped_text_and_origins_only() {
        let now = SystemTime::now();
        let status = Status {
            installed: "pg_webhook 0.3.0, SQL (script) flavor".into(),
            endpoints: vec![EndpointRow {
                id: 3,
                name: "<script>alert(1)</script>".into(),
                origin: origin("https://hooks.example.com:8443/in?token=s3cret"),
                state: "disabled".into(),
                disabled_reason: Some("the endpoint answered 410 Gone".into()),
                attempts_1h: 4,
                success_rate_1h: Some(0.5),
                p50_ms_1h: Some(8.0),
                p95_ms_1h: Some(f64::INFINITY),
                attempts_24h: 4,
                success_rate_24h: Some(0.5),
                last_success_at: Some(now),
                last_failure_at: Some(now),
                last_failure_status: Some(410),
                last_failure_error: Some("HTTP 410".into()),
                consecutive_failures: 1,
                pending: 0,
                waiting: 2,
                oldest_open_s: Some(12.0),
            }],
            failures: vec![],
            minutes: vec![
                Minute {
                    at: now - Duration::from_secs(120),
                    attempts: 10,
                    successes: 9,
                    p50_ms: Some(2.0),
                    p95_ms: Some(8.0),
                },
                Minute {
                    at: now,
                    attempts: 20,
                    successes: 20,
                    p50_ms: Some(4.0),
                    p95_ms: Some(16.0),
                },
            ],
        };
        let page = render(&status, "w-1");
        assert!(page.contains("health-down"), "a disabled endpoint is red");
        assert!(page.contains("&lt;script&gt;"), "names are escaped");
        assert!(!page.contains("s3cret") && page.contains("https://hooks.example.com:8443"));
        assert!(page.contains("<svg") && page.contains("<rect") && page.contains("<circle"));
        assert!(!page.contains("<script"), "no script at all");
        assert!(
            page.contains("pg_webhook 0.3.0, SQL (script) flavor"),
            "the flavor is shown"
        );
    }

    #[test]
    fn a_failing_active_endpoint_is_not_drawn_healthy() {
        let row = |state: &str, failures: i32, rate: Option<f64>| EndpointRow {
            id: 1,
            name: "e".into(),
            origin: "https://e.example/".into(),
            state: state.into(),
            disabled_reason: None,
            attempts_1h: 5,
            success_rate_1h: rate,
            p50_ms_1h: None,
            p95_ms_1h: None,
            attempts_24h: 5,
            success_rate_24h: rate,
            last_success_at: None,
            last_failure_at: None,
            last_failure_status: Some(500),
            last_failure_error: None,
            consecutive_failures: failures,
            pending: 3,
            waiting: 0,
            oldest_open_s: None,
        };
        assert_eq!(
            row("active", 5, Some(0.0)).health(),
            ("health-down", "failing")
        );
        assert_eq!(
            row("active", 0, Some(0.9)).health(),
            ("health-degraded", "degraded")
        );
        assert_eq!(
            row("active", 0, Some(1.0)).health(),
            ("health-ok", "healthy")
        );
        assert_eq!(row("active", 0, None).health(), ("health-ok", "healthy"));
        assert_eq!(row("disabled", 0, None).health().0, "health-down");
        assert_eq!(row("paused", 2, None).health().0, "health-held");
        let page = render(
            &Status {
                installed: String::new(),
                endpoints: vec![row("active", 5, Some(0.0))],
                failures: vec![],
                minutes: vec![],
            },
            "w",
        );
        assert!(
            page.contains("health-down") && page.contains("failing") && page.contains("5 in a row")
        );
    }
}
