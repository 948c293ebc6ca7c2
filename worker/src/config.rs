//! The worker's configuration: each setting declared once, here, as a flag
//! with its `PG_WEBHOOK_*` environment variable, default and range (clap
//! checks them and names the flag in its error); then [`Config::resolve`]
//! derives what the flags only describe (connections, their TLS, the
//! worker id, the trusted roots) and applies the environment's fallbacks
//! (`DATABASE_URL`, `HTTPS_PROXY`, `NO_PROXY`, `PGSSLMODE`).
//!
//! Why the lease is a margin and not a fixed length: each claim leases a
//! delivery for *its endpoint's* timeout plus this margin, so the lease always
//! outlives the request, whatever timeout an endpoint has; a fixed lease
//! shorter than some endpoint's timeout would make deliveries double.

use crate::db::tls::PgTls;
use clap::builder::{BoolishValueParser, RangedU64ValueParser, TypedValueParser};
use clap::{ArgAction, Parser};
use std::time::Duration;

/// Default number of deliveries in flight at once. No endpoint may hold
/// more than half of them (see `webhook._claim_deliveries`), so one
/// endpoint alone has 256 in flight: what the drain benchmark needs on
/// loopback (its rate is the claim size over the claim's round trip, and
/// 256 slots keep claims full). A stuck endpoint holds at most the other
/// half, which costs a socket and a task each; payload memory is bounded by
/// `--max-in-flight-bytes`, not by this.
pub const DEFAULT_CONCURRENCY: usize = 512;
/// Default largest claim.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Default fallback poll interval, in milliseconds.
pub const DEFAULT_POLL_INTERVAL_MS: &str = "1000";
/// Default lease margin over the endpoint's timeout, in milliseconds.
pub const DEFAULT_LEASE_MARGIN_MS: &str = "30000";
/// Default bound on the stored response excerpt, in bytes.
pub const DEFAULT_RESPONSE_EXCERPT_BYTES: usize = 1024;
/// Default time allowed for in-flight deliveries at shutdown, in milliseconds.
pub const DEFAULT_DRAIN_TIMEOUT_MS: &str = "30000";
/// Default bound on every database call, in milliseconds (see
/// `--db-timeout-ms`): under the default lease margin (30 s), as it must be.
pub const DEFAULT_DB_TIMEOUT_MS: &str = "20000";
/// Default most events fanned out per claim (whole transactions: a large
/// one may go beyond it). Large enough that fanning out costs a small share
/// of a claim, small enough that a claim after a long backlog stays short.
pub const DEFAULT_FANOUT_BATCH: usize = 1000;
/// Default most payload bytes in flight (32 MiB). A delivery holds its
/// payload twice while it is sent (as claimed, and inside the signed body),
/// and a claim's rows are briefly held twice too, so the worker's memory
/// for payloads stays within a few times this, whatever their size: with
/// 1 MiB payloads, 32 are in flight instead of `--concurrency` of them.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 32 * 1024 * 1024;
/// Default maintenance schedule: every minute, at second 0 (cron syntax
/// with seconds; see [`MaintenanceSchedule`]).
pub const DEFAULT_MAINTENANCE_SCHEDULE: &str = "0 * * * * *";

/// A count between `min` and `max`.
fn count(min: u64, max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(min..=max)
}

/// A duration given in milliseconds, between `min` and `max` ms.
fn millis(min: u64, max: u64) -> impl TypedValueParser<Value = Duration> {
    RangedU64ValueParser::<u64>::new()
        .range(min..=max)
        .map(Duration::from_millis)
}

/// Half the CPUs, at least one (see `--threads`).
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The configuration the worker runs with: flags and environment as parsed
/// by clap, then [`Config::resolve`]d. Build one with [`Config::load`] (a
/// command line) or [`Config::for_database`] (defaults, for embedding).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pg-webhook-worker",
    version,
    about = "Delivers pg_webhook deliveries: claims, signs, POSTs, retries, records.",
    after_help = "For local development, `pg-webhook-worker listen --secret whsec_… --port 8787` runs a receiver that verifies and prints deliveries (see `pg-webhook-worker listen --help`)."
)]
pub struct Config {
    /// PostgreSQL connection string (URL or key=value). Falls back to DATABASE_URL.
    /// It may go through pgbouncer in transaction mode.
    #[arg(long, env = "PG_WEBHOOK_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Connection string for LISTEN, which needs a session of its own: a
    /// direct connection to PostgreSQL when --database-url goes through a
    /// transaction-mode pooler. Defaults to --database-url.
    #[arg(long, env = "PG_WEBHOOK_LISTEN_URL", hide_env_values = true)]
    listen_url: Option<String>,
    /// Where the database is, from --database-url (its `Debug` redacts the password).
    #[arg(skip)]
    pub pg: tokio_postgres::Config,
    /// TLS for `pg`, from the connection string's `sslmode` and `sslrootcert`.
    #[arg(skip)]
    pub pg_tls: PgTls,
    /// Where to LISTEN, from --listen-url (default: `pg`).
    #[arg(skip)]
    pub listen_pg: tokio_postgres::Config,
    /// TLS for `listen_pg`.
    #[arg(skip)]
    pub listen_tls: PgTls,
    /// Deliveries in flight at once.
    #[arg(long, env = "PG_WEBHOOK_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = count(1, 10_000))]
    pub concurrency: usize,
    /// Most deliveries taken by one claim.
    #[arg(long, env = "PG_WEBHOOK_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE,
          value_parser = count(1, 10_000))]
    pub batch_size: usize,
    /// Longest sleep between two looks at the queue when no NOTIFY arrives, in ms.
    #[arg(long = "poll-interval-ms", value_name = "MS", env = "PG_WEBHOOK_POLL_INTERVAL_MS",
          default_value = DEFAULT_POLL_INTERVAL_MS, value_parser = millis(10, 3_600_000))]
    pub poll_interval: Duration,
    /// Lease margin over the endpoint's timeout, in ms: how long after a worker
    /// dies its claims become available again beyond the request timeout.
    #[arg(long = "lease-margin-ms", value_name = "MS", env = "PG_WEBHOOK_LEASE_MARGIN_MS",
          default_value = DEFAULT_LEASE_MARGIN_MS, value_parser = millis(100, 3_600_000))]
    pub lease_margin: Duration,
    /// Bytes of response body kept in webhook.attempts.response_excerpt.
    #[arg(long, env = "PG_WEBHOOK_RESPONSE_EXCERPT_BYTES", default_value_t = DEFAULT_RESPONSE_EXCERPT_BYTES,
          value_parser = count(0, 65_536))]
    pub response_excerpt_bytes: usize,
    /// Allow loopback, private and link-local destinations (tests, internal setups).
    #[arg(long, env = "PG_WEBHOOK_ALLOW_PRIVATE_TARGETS", default_value = "false",
          action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub allow_private_targets: bool,
    /// Identifier recorded with each attempt. Defaults to <hostname>-<pid>
    /// (the kernel's host name: gethostname(2)).
    #[arg(
        long,
        env = "PG_WEBHOOK_WORKER_ID",
        default_value = "",
        hide_default_value = true
    )]
    pub worker_id: String,
    /// PEM file of extra root certificates to trust, besides the Mozilla
    /// roots (receivers behind a private certificate authority).
    #[arg(long = "ca-file", env = "PG_WEBHOOK_CA_FILE", value_name = "CA_FILE",
          default_value = "", hide_default_value = true, value_parser = Roots::read)]
    pub extra_roots: Roots,
    /// Runtime threads. Default: half the CPUs, at least one. The worker is
    /// I/O-bound and usually shares the machine with PostgreSQL; measured on
    /// 2 cores, one thread delivers ~15% more than two (no cross-thread
    /// wake-ups) and leaves the other core to the database.
    #[arg(long, env = "PG_WEBHOOK_THREADS", default_value_t = default_threads(),
          value_parser = count(1, 256))]
    pub threads: usize,
    /// Time given to in-flight deliveries on shutdown, in ms; the rest are left
    /// to lease expiry (another worker redelivers them).
    #[arg(long = "drain-timeout-ms", value_name = "MS", env = "PG_WEBHOOK_DRAIN_TIMEOUT_MS",
          default_value = DEFAULT_DRAIN_TIMEOUT_MS, value_parser = millis(0, 3_600_000))]
    pub drain_timeout: Duration,
    /// Longest wait for a database call (record, next due; ten times this
    /// for the maintenance) before the connection is given up and opened
    /// again. A claim waits at most this or --lease-margin-ms, whichever is
    /// shorter: a claim that waited longer for a stuck server could hand
    /// out deliveries whose leases had run out meanwhile (another worker
    /// may have claimed them). Connections also get a connect timeout
    /// (10 s), TCP keepalives (15 s idle, 5 s apart, 3 probes) and a TCP
    /// user timeout (30 s) unless the connection string sets them.
    #[arg(long = "db-timeout-ms", value_name = "MS", env = "PG_WEBHOOK_DB_TIMEOUT_MS",
          default_value = DEFAULT_DB_TIMEOUT_MS, value_parser = millis(1_000, 3_600_000))]
    pub db_timeout: Duration,
    /// Egress proxy for every request (http://host:port, credentials in the
    /// URL if any), for a stable source address receivers can allow.
    /// Falls back to HTTPS_PROXY. NO_PROXY lists destinations to reach directly.
    #[arg(long = "proxy", env = "PG_WEBHOOK_PROXY", hide_env_values = true)]
    proxy_url: Option<String>,
    /// The egress proxy, from --proxy or HTTPS_PROXY (its `Debug` hides
    /// credentials). Parsed by [`Config::resolve`], not by clap, whose
    /// error would repeat the URL, credentials included.
    #[arg(skip)]
    pub proxy: Option<ProxyUrl>,
    /// Destinations reached without the proxy (`NO_PROXY`, or `no_proxy`:
    /// comma-separated hosts, domains and networks, as curl reads it).
    /// They get no trust of the proxy's: its own host is never a
    /// destination (http/dispatch.rs).
    #[arg(skip)]
    pub no_proxy: Option<String>,
    /// Serve /metrics, /healthz, /readyz and the status page on this
    /// address (e.g. 127.0.0.1:9187). Off when absent.
    #[arg(long, env = "PG_WEBHOOK_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log lines as plain text or as JSON objects (one per line).
    #[arg(long, env = "PG_WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Most events fanned out (turned into deliveries) per claim.
    #[arg(long, env = "PG_WEBHOOK_FANOUT_BATCH", default_value_t = DEFAULT_FANOUT_BATCH,
          value_parser = count(1, 1_000_000))]
    pub fanout_batch: usize,
    /// Most payload bytes in flight: claims stop short of it (a single
    /// larger payload is still sent, alone beyond the budget).
    #[arg(long, env = "PG_WEBHOOK_MAX_IN_FLIGHT_BYTES", default_value_t = DEFAULT_MAX_IN_FLIGHT_BYTES,
          value_parser = count(1024, 1 << 40))]
    pub max_in_flight_bytes: usize,
    /// When to run the maintenance (retention purge, auto-disable): a cron
    /// expression, with seconds ("0 * * * * *") or without ("*/5 * * * *"),
    /// in UTC; "off" to leave it to another worker or to webhook_purge().
    /// One worker at a time runs it.
    #[arg(long = "maintenance-schedule", env = "PG_WEBHOOK_MAINTENANCE_SCHEDULE",
          default_value = DEFAULT_MAINTENANCE_SCHEDULE, value_parser = MaintenanceSchedule::parse)]
    pub maintenance: MaintenanceSchedule,
}

/// Extra trusted root certificates (DER), read from `--ca-file`.
#[derive(Debug, Clone, Default)]
pub struct Roots(pub Vec<rustls::pki_types::CertificateDer<'static>>);

impl Roots {
    /// Reads every certificate of a PEM file; none for "".
    pub fn read(path: &str) -> Result<Self, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        if path.is_empty() {
            return Ok(Self::default());
        }
        let fail = |reason: String| ConfigError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("{e:?}")))?;
        if certs.is_empty() {
            return Err(fail("no PEM certificate in it".into()));
        }
        Ok(Self(certs))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// The egress proxy's URL; shown without its credentials.
#[derive(Clone)]
pub struct ProxyUrl(reqwest::Url);

impl ProxyUrl {
    /// Parses an http(s) proxy URL.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let fail = |reason: &str| ConfigError::Proxy {
            reason: reason.to_owned(),
        };
        let url = reqwest::Url::parse(s).map_err(|e| fail(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(fail("use http://host:port (or https://)"));
        }
        Ok(Self(url))
    }

    /// The whole URL, credentials included (for the HTTP client only).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The proxy's host.
    pub fn host_str(&self) -> Option<&str> {
        self.0.host_str()
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.clone();
        if !shown.username().is_empty() || shown.password().is_some() {
            let _ = shown.set_username("redacted");
            let _ = shown.set_password(None);
        }
        write!(f, "{:?}", shown.as_str())
    }
}

/// A parsed `--maintenance-schedule` (the `cron` crate's syntax, which has
/// a seconds field; a classic five-field expression gets "0" seconds), or
/// "off".
#[derive(Clone)]
pub struct MaintenanceSchedule {
    expression: String,
    schedule: Option<cron::Schedule>,
}

impl MaintenanceSchedule {
    /// Parses an expression, or "off".
    pub fn parse(expression: &str) -> Result<Self, ConfigError> {
        let expression = expression.trim();
        if expression.eq_ignore_ascii_case("off") {
            return Ok(Self::off());
        }
        let full = if expression.split_whitespace().count() == 5 {
            format!("0 {expression}")
        } else {
            expression.to_owned()
        };
        let schedule = full
            .parse::<cron::Schedule>()
            .map_err(|e| ConfigError::Schedule {
                expression: expression.to_owned(),
                reason: e.to_string(),
            })?;
        if schedule.upcoming(chrono::Utc).next().is_none() {
            return Err(ConfigError::Schedule {
                expression: expression.to_owned(),
                reason: "it never fires".into(),
            });
        }
        Ok(Self {
            expression: expression.to_owned(),
            schedule: Some(schedule),
        })
    }

    /// No maintenance from this worker.
    pub fn off() -> Self {
        Self {
            expression: "off".into(),
            schedule: None,
        }
    }

    /// False for "off".
    pub fn is_on(&self) -> bool {
        self.schedule.is_some()
    }

    /// How long from `now` until the next run (`None` when off).
    pub fn until_next(&self, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
        let schedule = self.schedule.as_ref()?;
        Some(
            schedule
                .after(&now)
                .next()
                .and_then(|t| (t - now).to_std().ok())
                .unwrap_or(Duration::from_secs(3600)),
        )
    }
}

impl std::fmt::Debug for MaintenanceSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.expression)
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No connection string anywhere.
    #[error("no database given: set DATABASE_URL (or PG_WEBHOOK_DATABASE_URL, or --database-url)")]
    MissingDatabaseUrl,
    /// A flag or environment variable clap refuses (its message names the
    /// flag and the accepted range), or `--help` / `--version`.
    #[error(transparent)]
    Flags(clap::Error),
    /// A connection string does not parse.
    #[error("the {which} connection string is invalid")]
    InvalidConnectionString {
        /// "database" or "--listen-url"
        which: &'static str,
        /// why
        #[source]
        source: tokio_postgres::Error,
    },
    /// The TLS settings of a connection string are invalid or unusable.
    #[error("the TLS settings of the {which} connection string: {reason}")]
    Tls {
        /// "database" or "--listen-url"
        which: &'static str,
        /// what is wrong
        reason: String,
    },
    /// The CA file cannot be read or holds no valid certificate.
    #[error("cannot use the CA file {path}: {reason}")]
    CaFile {
        /// the file given
        path: String,
        /// what went wrong
        reason: String,
    },
    /// The proxy URL does not parse (the message never repeats the URL: it
    /// may hold credentials).
    #[error("the proxy URL is invalid: {reason}")]
    Proxy {
        /// what is wrong with it
        reason: String,
    },
    /// The maintenance schedule is not a cron expression.
    #[error("--maintenance-schedule {expression:?} is not a valid cron expression: {reason}")]
    Schedule {
        /// what was given
        expression: String,
        /// what is wrong with it
        reason: String,
    },
}

/// This machine's name, as gethostname(2) gives it (the kernel's
/// `/proc/sys/kernel/hostname`: systemd does not set `$HOSTNAME`, a shell
/// does), else `$HOSTNAME`, else "worker".
fn host_name(lookup: &impl Fn(&str) -> Option<String>) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| lookup("HOSTNAME"))
        .unwrap_or_else(|| "worker".into())
}

/// A connection string made ready to connect with: its TLS settings taken
/// out (tls.rs), the rest parsed by tokio-postgres, waits bounded, the
/// application name set unless given. `which` names it in errors.
fn connection(
    dsn: &str,
    which: &'static str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(tokio_postgres::Config, PgTls), ConfigError> {
    let split =
        crate::db::tls::split(dsn, lookup).map_err(|reason| ConfigError::Tls { which, reason })?;
    let mut pg: tokio_postgres::Config = split
        .rest
        .parse()
        .map_err(|source| ConfigError::InvalidConnectionString { which, source })?;
    pg.ssl_mode(split.driver_mode);
    let tls = crate::db::tls::unless_local(&mut pg, split.tls);
    if pg.get_application_name().is_none() {
        pg.application_name("pg-webhook-worker");
    }
    crate::db::connect::bound_waits(&mut pg, &|key| split.keys.iter().any(|k| k == key));
    Ok((pg, tls))
}

impl Config {
    /// How long a claim may wait for the database: `db_timeout`, clamped to
    /// the lease margin (see `--db-timeout-ms`).
    pub fn claim_timeout(&self) -> Duration {
        self.db_timeout.min(self.lease_margin)
    }

    /// Parses a command line (`args`, program name first) and the
    /// `PG_WEBHOOK_*` environment, then [`Config::resolve`]s it with
    /// `lookup`. A flag clap refuses (or `--help`, `--version`) is
    /// [`ConfigError::Flags`]: `clap::Error::exit` prints it as a CLI should.
    pub fn load<I, T>(args: I, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
            .map_err(ConfigError::Flags)?
            .resolve(lookup)
    }

    /// Derives what the flags describe and applies the environment's
    /// fallbacks. `lookup` reads the environment (a parameter so that tests
    /// never mutate the process environment). Once: it takes the connection
    /// strings and the proxy URL out of the flags (so that no `Debug` of a
    /// resolved configuration shows a password).
    pub fn resolve(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let present = |s: Option<String>| s.filter(|s| !s.is_empty());
        let dsn = present(self.database_url.take())
            .or_else(|| present(lookup("DATABASE_URL")))
            .ok_or(ConfigError::MissingDatabaseUrl)?;
        (self.pg, self.pg_tls) = connection(&dsn, "database", &lookup)?;
        (self.listen_pg, self.listen_tls) = match present(self.listen_url.take()) {
            Some(url) => connection(&url, "--listen-url", &lookup)?,
            None => (self.pg.clone(), self.pg_tls.clone()),
        };
        if self.worker_id.is_empty() {
            self.worker_id = format!("{}-{}", host_name(&lookup), std::process::id());
        }
        self.proxy = present(self.proxy_url.take())
            .or_else(|| present(lookup("HTTPS_PROXY")))
            .or_else(|| present(lookup("https_proxy")))
            .map(|p| ProxyUrl::parse(&p))
            .transpose()?;
        self.no_proxy = present(lookup("NO_PROXY")).or_else(|| present(lookup("no_proxy")));
        Ok(self)
    }

    /// Defaults for the given connection string (for embedding the worker as
    /// a library; tests use it).
    pub fn for_database(dsn: &str) -> Result<Self, ConfigError> {
        Self::load(["pg-webhook-worker", "--database-url", dsn], |_| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `args` (the program name is added) with `lookup` as the environment.
    fn load(args: &[&str], lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut all = vec!["pg-webhook-worker"];
        all.extend_from_slice(args);
        Config::load(all, lookup)
    }

    #[test]
    fn falls_back_to_database_url() {
        let c = load(&[], |k| {
            (k == "DATABASE_URL").then(|| "postgres://u:secretpw@db/x".into())
        })
        .unwrap();
        assert_eq!(c.pg.get_dbname(), Some("x"));
        assert_eq!(c.concurrency, DEFAULT_CONCURRENCY);
        assert!(!c.allow_private_targets);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("secretpw"),
            "the password must not appear in logs: {shown}"
        );
    }

    #[test]
    fn waits_are_bounded_unless_the_string_sets_them_and_only_its_keys_count() {
        // A password that reads like a setting used to switch the bounds off.
        let c = load(
            &[
                "--database-url",
                "host=db password=keepalives_connect_timeout",
            ],
            |_| None,
        )
        .unwrap();
        assert_eq!(c.pg.get_connect_timeout(), Some(&Duration::from_secs(10)));
        assert_eq!(c.pg.get_keepalives_idle(), Duration::from_secs(15));
        let c = load(
            &[
                "--database-url",
                "postgres://u:connect_timeout@db/x?connect_timeout=3&keepalives_idle=99",
            ],
            |_| None,
        )
        .unwrap();
        assert_eq!(c.pg.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(c.pg.get_keepalives_idle(), Duration::from_secs(99));
    }

    #[test]
    fn flag_wins_over_database_url() {
        let c = load(&["--database-url", "host=a dbname=flag"], |k| {
            (k == "DATABASE_URL").then(|| "dbname=env".into())
        })
        .unwrap();
        assert_eq!(c.pg.get_dbname(), Some("flag"));
    }

    #[test]
    fn a_claim_never_waits_past_the_lease_margin() {
        let c = load(
            &[
                "--database-url",
                "dbname=x",
                "--db-timeout-ms",
                "60000",
                "--lease-margin-ms",
                "500",
            ],
            |_| None,
        )
        .unwrap();
        assert_eq!(c.claim_timeout(), Duration::from_millis(500));
        assert_eq!(
            c.db_timeout,
            Duration::from_secs(60),
            "other calls keep theirs"
        );
        let c = load(&["--database-url", "dbname=x"], |_| None).unwrap();
        assert!(c.db_timeout < c.lease_margin, "the defaults need no clamp");
        assert_eq!(c.claim_timeout(), c.db_timeout);
    }

    #[test]
    fn the_worker_id_is_the_machines_name_and_the_pid() {
        let c = load(&["--database-url", "dbname=x"], |_| None).unwrap();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(
            c.worker_id,
            format!("{}-{}", host.trim(), std::process::id())
        );
    }

    #[test]
    fn missing_database_is_a_clear_error() {
        let e = load(&[], |_| None).unwrap_err();
        assert!(e.to_string().contains("DATABASE_URL"), "{e}");
    }

    #[test]
    fn rejects_out_of_range_values() {
        let e = load(
            &["--database-url", "dbname=x", "--concurrency", "0"],
            |_| None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--concurrency"), "{e}");
        let e = load(
            &["--database-url", "dbname=x", "--lease-margin-ms", "5"],
            |_| None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--lease-margin-ms"), "{e}");
    }

    #[test]
    fn ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir();
        let missing = dir.join("pgwh-no-such-ca.pem");
        let e = load(
            &[
                "--database-url",
                "dbname=x",
                "--ca-file",
                missing.to_str().unwrap(),
            ],
            |_| None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("pgwh-no-such-ca.pem"), "{e}");
        let empty = dir.join(format!("pgwh-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate").unwrap();
        let e = load(
            &[
                "--database-url",
                "dbname=x",
                "--ca-file",
                empty.to_str().unwrap(),
            ],
            |_| None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        std::fs::remove_file(empty).ok();
    }

    #[test]
    fn proxy_from_flag_or_https_proxy_with_credentials_hidden() {
        let c = load(&["--database-url", "dbname=x"], |k| {
            (k == "HTTPS_PROXY").then(|| "http://user:hunter2@proxy.internal:3128".into())
        })
        .unwrap();
        let proxy = c.proxy.as_ref().unwrap();
        assert_eq!(proxy.host_str(), Some("proxy.internal"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("proxy.internal"),
            "{shown}"
        );
        let e = load(
            &["--database-url", "dbname=x", "--proxy", "socks5://p:1080"],
            |_| None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("proxy"), "{e}");
        assert!(load(&["--database-url", "dbname=x"], |_| None)
            .unwrap()
            .proxy
            .is_none());
    }

    #[test]
    fn maintenance_schedule_takes_cron_with_or_without_seconds() {
        let at = |s: &str| {
            load(
                &["--database-url", "dbname=x", "--maintenance-schedule", s],
                |_| None,
            )
        };
        let every_minute = at("0 * * * * *").unwrap().maintenance;
        let now = "2026-01-01T10:00:30Z".parse().unwrap();
        assert_eq!(every_minute.until_next(now), Some(Duration::from_secs(30)));
        let five = at("*/5 * * * *").unwrap().maintenance;
        assert_eq!(five.until_next(now), Some(Duration::from_secs(270)));
        assert!(!at("off").unwrap().maintenance.is_on());
        let e = at("every tuesday").unwrap_err();
        assert!(e.to_string().contains("--maintenance-schedule"), "{e}");
    }

    #[test]
    fn parses_booleans_and_durations() {
        let c = load(
            &[
                "--database-url",
                "dbname=x",
                "--allow-private-targets",
                "true",
                "--poll-interval-ms",
                "50",
            ],
            |_| None,
        )
        .unwrap();
        assert!(c.allow_private_targets);
        assert_eq!(c.poll_interval, Duration::from_millis(50));
    }
}
