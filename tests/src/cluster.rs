//! Servers of their own: pgbouncer, a TLS-only cluster, a whole cluster
//! (for restores and base backups), and the PostgreSQL programs run as the
//! cluster's owner.

use crate::{admin_dsn, connect, TestCa, WAIT};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// Debian's pgbouncer in transaction pooling mode, in front of the test
/// cluster, on a free port of 127.0.0.1; stopped when dropped.
pub struct PgBouncer {
    port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl PgBouncer {
    /// Starts it with a pool of `pool_size` server connections per
    /// database, so that consecutive transactions of one client run on
    /// different server connections.
    pub async fn start(pool_size: u32) -> Self {
        let admin: tokio_postgres::Config = admin_dsn().parse().expect("admin DSN");
        let pg_port = admin.get_ports().first().copied().unwrap_or(5432);
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("pgwh-pgbouncer-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("pgbouncer directory");
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={pg_port} user=postgres\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = any\npool_mode = transaction\ndefault_pool_size = {pool_size}\n\
                 max_client_conn = 200\nstats_users = postgres\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {log}\npidfile = {pid}\n",
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )
        .expect("pgbouncer.ini");
        let bin = std::env::var("PGBOUNCER_BIN").unwrap_or_else(|_| "/usr/sbin/pgbouncer".into());
        // pgbouncer refuses to run as root: as root, it runs as postgres.
        chown_to_cluster_owner(&dir);
        let mut command = command_as_cluster_owner(&bin);
        let child = command
            .arg(&ini)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (install Debian's pgbouncer): {e}"));
        let bouncer = Self { port, dir, child };
        // Ready once it accepts a client.
        let deadline = Instant::now() + WAIT;
        while tokio_postgres::connect(&bouncer.dsn("postgres"), NoTls)
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not start: see {}",
                bouncer.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bouncer
    }

    /// A connection string to `dbname` through it.
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// Transactions it has passed on for `dbname` (SHOW STATS).
    pub async fn transactions(&self, dbname: &str) -> i64 {
        let c = connect(&self.dsn("pgbouncer")).await;
        let rows = c.simple_query("show stats").await.expect("show stats");
        rows.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some(dbname) => {
                    r.get("total_xact_count")
                        .and_then(|v| v.parse::<i64>().ok())
                }
                _ => None,
            })
            .sum()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // SIGTERM through kill: the child may be runuser, whose pgbouncer
        // child gets the signal forwarded.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", pid.trim()])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether this process runs as root (PostgreSQL tools then run as postgres).
fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL's programs (and pgbouncer) refuse to run as root: as root,
/// `program` runs as the `postgres` OS user, else as the test itself.
fn command_as_cluster_owner(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    if running_as_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

/// Gives `dir` (recursively) to the user [`command_as_cluster_owner`] runs as.
fn chown_to_cluster_owner(dir: &std::path::Path) {
    if running_as_root() {
        let _ = std::process::Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir)
            .status();
    }
}

/// A TCP port free on 127.0.0.1 (for a server a program starts itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Where PostgreSQL's programs are: `PG_BIN`, the directory
/// scripts/cluster.sh uses too (default: Debian's PostgreSQL 15), for every
/// program the tests run on the major under test.
fn pg_bin() -> std::path::PathBuf {
    std::env::var("PG_BIN")
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
        .into()
}

/// Whether the PostgreSQL under test (`PG_BIN`) has the shared library
/// `name` (`citus.so`) in its library directory.
pub fn has_library(name: &str) -> bool {
    let out = std::process::Command::new(pg_bin().join("pg_config"))
        .arg("--pkglibdir")
        .output()
        .expect("run pg_config");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::path::Path::new(&dir).join(name).exists()
}

/// Runs one of PostgreSQL's client programs (`pg_dump`, `pg_restore`, …)
/// from `PG_BIN` (default: Debian's PostgreSQL 15) and fails the test with
/// its output if it fails.
pub async fn pg_tool(program: &str, args: &[&str]) {
    pg_tool_of(&pg_bin(), program, args).await;
}

/// [`pg_tool`] with the programs in `bin` (another major's).
pub async fn pg_tool_of(bin: &std::path::Path, program: &str, args: &[&str]) {
    succeed(
        tokio::process::Command::new(bin.join(program)).args(args),
        program,
        args,
    )
    .await;
}

/// Runs the project's `scripts/<name>` with bash, `PG_BIN` naming the
/// PostgreSQL under test's programs; panics with its output unless it
/// succeeds.
pub async fn pg_script(name: &str, args: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name);
    succeed(
        tokio::process::Command::new("bash")
            .arg(script)
            .args(args)
            .env("PG_BIN", pg_bin()),
        name,
        args,
    )
    .await;
}

/// Runs `command` (`program` with `args`, for the message) to its end;
/// panics with its output unless it succeeds.
async fn succeed(command: &mut tokio::process::Command, program: &str, args: &[&str]) {
    let out = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL cluster of its own that accepts only TLS connections
/// (`ssl = on`, `hostssl` rules only); stopped when dropped.
pub struct TlsCluster {
    dir: std::path::PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl TlsCluster {
    /// Initialises and starts it with a server certificate of `ca` for
    /// `localhost` and `127.0.0.1` (a few seconds).
    pub fn start(ca: &TestCa) -> Self {
        let (cert, key) = &ca.server_pem;
        Self::start_with_pem(cert, key, &[])
    }

    /// Initialises and starts it with this certificate and key (PEM) and
    /// these extra `postgresql.conf` lines.
    pub fn start_with_pem(cert: &str, key: &str, settings: &[&str]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pgwh-tls-{}-{port}", std::process::id()));
        let files = dir.join("files");
        std::fs::create_dir_all(&files).expect("cluster directory");
        std::fs::write(files.join("server.crt"), cert).expect("server.crt");
        std::fs::write(files.join("server.key"), key).expect("server.key");
        std::fs::write(
            files.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            files.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("key permissions");
        chown_to_cluster_owner(&dir);
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir.join("pg"))
            .arg(port.to_string())
            .arg("ssl = on")
            .arg(format!(
                "ssl_cert_file = '{}'",
                files.join("server.crt").display()
            ))
            .arg(format!(
                "ssl_key_file = '{}'",
                files.join("server.key").display()
            ))
            .arg(format!(
                "hba_file = '{}'",
                files.join("pg_hba.conf").display()
            ))
            .args(settings)
            .status()
            .expect("run scripts/cluster.sh");
        assert!(status.success(), "the TLS cluster did not start");
        Self { dir, port }
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
        let _ = std::process::Command::new("bash")
            .arg(&script)
            .arg("stop")
            .arg(self.dir.join("pg"))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster of the test's own (trust authentication, loopback),
/// for what must not touch the shared one: an immediate restart, a base
/// backup, another major and pg_upgrade to it. Stopped when dropped.
pub struct OwnCluster {
    dir: std::path::PathBuf,
    /// The directory of the PostgreSQL programs it runs with.
    bin: std::path::PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl OwnCluster {
    /// Initialises and starts it with `PG_BIN`'s PostgreSQL (a few seconds).
    pub fn start() -> Self {
        Self::start_with(&pg_bin())
    }

    /// Initialises and starts it with the PostgreSQL whose programs are in
    /// `bin`.
    pub fn start_with(bin: &std::path::Path) -> Self {
        Self::create(bin, "start", &[])
    }

    /// Initialises and starts it with `PG_BIN`'s PostgreSQL and these extra
    /// `postgresql.conf` lines.
    pub fn start_with_settings(settings: &[&str]) -> Self {
        Self::create(&pg_bin(), "start", settings)
    }

    /// A cluster of `bin`'s PostgreSQL in a directory of its own, through
    /// scripts/cluster.sh `command` (`start`, or `init`: not started), data
    /// checksums on (the default from 18 on; pg_upgrade wants both sides
    /// alike, and every cluster here is made this one way).
    fn create(bin: &std::path::Path, command: &str, settings: &[&str]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pgwh-own-{}-{port}", std::process::id()));
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg(command)
            .arg(&dir)
            .arg(port.to_string())
            .arg("fsync = off")
            .args(settings)
            .env("PG_BIN", bin)
            .env("INITDB_OPTIONS", "--data-checksums")
            .status()
            .expect("run scripts/cluster.sh");
        assert!(status.success(), "scripts/cluster.sh {command} failed");
        Self {
            dir,
            bin: bin.to_owned(),
            port,
        }
    }

    /// Moves it to the PostgreSQL whose programs are in `new_bin` with that
    /// version's `pg_upgrade` (stopped first; the new cluster initialised
    /// beside it as every cluster here is, upgraded by copying the files,
    /// then started). The old one's directory is removed.
    pub fn pg_upgrade(self, new_bin: &std::path::Path) -> OwnCluster {
        let old_data = self.dir.join("data").display().to_string();
        run_as_cluster_owner(
            &self.bin,
            "pg_ctl",
            &["-D", &old_data, "-m", "fast", "-w", "stop"],
            None,
        );
        let upgraded = OwnCluster::create(new_bin, "init", &[]);
        let data = upgraded.dir.join("data").display().to_string();
        let (old_bin, bin) = (
            self.bin.display().to_string(),
            new_bin.display().to_string(),
        );
        let socket = upgraded.dir.join("sock").display().to_string();
        // pg_upgrade writes its logs where it runs: the new cluster's directory.
        run_as_cluster_owner(
            new_bin,
            "pg_upgrade",
            &[
                "-b",
                &old_bin,
                "-B",
                &bin,
                "-d",
                &old_data,
                "-D",
                &data,
                "-U",
                "postgres",
                "-p",
                &free_port().to_string(),
                "-P",
                &free_port().to_string(),
                "--socketdir",
                &socket,
            ],
            Some(&upgraded.dir),
        );
        upgraded.start_server();
        upgraded
    }

    /// Starts the server of an initialised data directory on its port.
    fn start_server(&self) {
        let data = self.dir.join("data").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.join("sock").display()
        );
        let log = self.dir.join("log").display().to_string();
        run_as_cluster_owner(
            &self.bin,
            "pg_ctl",
            &[
                "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
            ],
            None,
        );
    }

    /// A connection string to `dbname` as postgres, through the cluster's
    /// Unix-domain socket.
    pub fn socket_dsn(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.dir.join("sock").display(),
            self.port
        )
    }

    /// A connection string to `dbname` as postgres.
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// Stops it as a crash would (`pg_ctl -m immediate`: no checkpoint, every
    /// connection cut) and starts it again (crash recovery).
    pub fn restart_immediately(&self) {
        let data = self.dir.join("data").display().to_string();
        let log = self.dir.join("log").display().to_string();
        run_as_cluster_owner(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "-w", "stop"],
            None,
        );
        run_as_cluster_owner(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
            None,
        );
    }

    /// A physical copy of it, started beside it: `pg_basebackup` (WAL
    /// streamed, fast checkpoint) into a directory of its own, started on
    /// a port of its own, as a base backup restored elsewhere is. The copy
    /// and the original then diverge.
    pub fn base_backup(&self) -> OwnCluster {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pgwh-own-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("sock")).expect("copy directory");
        chown_to_cluster_owner(&dir);
        let data = dir.join("data").display().to_string();
        run_as_cluster_owner(
            &self.bin,
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &data,
                "-X",
                "stream",
                "-c",
                "fast",
            ],
            None,
        );
        let copy = OwnCluster {
            dir,
            bin: self.bin.clone(),
            port,
        };
        copy.start_server();
        copy
    }
}

/// Runs one of the PostgreSQL programs in `bin` as the cluster's owner
/// (the `postgres` OS user when the tests run as root), in directory `cwd`
/// (the test's own when None), and fails the test if it fails.
fn run_as_cluster_owner(
    bin: &std::path::Path,
    program: &str,
    args: &[&str],
    cwd: Option<&std::path::Path>,
) {
    let mut command = command_as_cluster_owner(bin.join(program));
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let out = command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
        let _ = std::process::Command::new("bash")
            .arg(&script)
            .arg("stop")
            .arg(&self.dir)
            .env("PG_BIN", &self.bin)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
