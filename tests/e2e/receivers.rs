//! Receivers in their own languages: the Python and Node examples (which
//! verify with the official Standard Webhooks packages) and
//! `pg-webhook-worker listen` accept what the worker sends — across a
//! secret rotation — deduplicate on webhook-id, and refuse a tampered body
//! and a stale timestamp.

use pg_webhook_protocol::{sign, Secret};
use pg_webhook_tests::{
    examples_python, repo_path as repo, within, worker_binary, RunningWorker, TestDb,
};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A receiver process; its stdout lines arrive on `lines`.
struct Process {
    child: Child,
    url: String,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Process {
    async fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {command:?}: {e} (tests/run.sh sets the examples up)")
            });
        let (tx, mut lines) = mpsc::unbounded_channel();
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        // Read everything, always: a receiver blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                let _ = tx.send(line);
            }
        });
        let first = within("the receiver to listen", lines.recv())
            .await
            .expect("a first line");
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        Self {
            child,
            url: format!("http://{addr}/hooks"),
            lines,
        }
    }

    /// The next line that contains `needle`.
    async fn line_with(&mut self, needle: &str) -> String {
        within(&format!("a receiver line with {needle:?}"), async {
            loop {
                let line = self.lines.recv().await.expect("the receiver is running");
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn python(secret: &str) -> Command {
    let mut c = Command::new(examples_python());
    c.arg(repo("examples/python/receiver.py"))
        .args(["--port", "0", "--secret", secret]);
    c
}

fn node(secret: &str) -> Command {
    let mut c = Command::new(std::env::var("NODE").unwrap_or_else(|_| "node".into()));
    c.arg(repo("examples/node/receiver.js"))
        .args(["--port", "0", "--secret", secret]);
    c
}

fn listen(secret: &str) -> Command {
    let mut c = Command::new(worker_binary());
    c.args(["listen", "--port", "0", "--secret", secret]);
    c
}

/// Drives real deliveries through a receiver started by `make`: accepted,
/// a replay seen as a duplicate, a rotation (the receiver holds the old
/// secret, then the new one), a tampered body and a stale timestamp refused.
async fn drive(make: fn(&str) -> Command, accepted: &str, duplicate: &str, rejected: &str) {
    let db = TestDb::new().await;
    let client = db.client().await;
    let secret: String = client
        .query_one("select webhook._generate_secret()", &[])
        .await
        .unwrap()
        .get(0);
    let mut receiver = Process::start(make(&secret)).await;
    let endpoint: i64 = client
        .query_one(
            "select endpoint_id from webhook_subscribe($1, secret => $2)",
            &[&receiver.url, &secret],
        )
        .await
        .unwrap()
        .get(0);
    let mut worker = RunningWorker::start(db.worker_config());

    let event: i64 = client
        .query_one(
            "select webhook_publish('order.created', '{\"id\": 1}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let id = db.message_id(&client, event).await;
    let line = receiver.line_with(&id).await;
    assert!(line.contains(accepted), "{line}");
    // A replay carries the same webhook-id: the receiver sees a duplicate.
    client
        .batch_execute(&format!("select webhook_replay({event})"))
        .await
        .unwrap();
    let line = receiver.line_with(&id).await;
    assert!(line.contains(duplicate), "{line}");

    // Rotation: during the grace both signatures are sent; the receiver
    // still holding the old secret accepts, and so does one with the new.
    let new: String = client
        .query_one(
            &format!("select webhook_rotate_secret({endpoint}, '1 hour')"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let e2: i64 = client
        .query_one("select webhook_publish('order.paid', '{}')", &[])
        .await
        .unwrap()
        .get(0);
    let id2 = db.message_id(&client, e2).await;
    assert!(receiver.line_with(&id2).await.contains(accepted));
    receiver.stop().await;
    let mut receiver = Process::start(make(&new)).await;
    client
        .execute(
            "select webhook_update($1, url => $2)",
            &[&endpoint, &receiver.url],
        )
        .await
        .unwrap();
    let e3: i64 = client
        .query_one("select webhook_publish('order.shipped', '{}')", &[])
        .await
        .unwrap()
        .get(0);
    let id3 = db.message_id(&client, e3).await;
    assert!(receiver.line_with(&id3).await.contains(accepted));
    db.wait_deliveries(&client, "succeeded", 4, &mut worker.events)
        .await;
    worker.stop().await;

    // Forgeries, signed as pg_webhook signs, then altered.
    let key = Secret::parse(&new).unwrap();
    let http = reqwest::Client::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = r#"{"type":"order.refunded","timestamp":"2026-01-01T00:00:00.000000Z","data":{"amount":100}}"#;
    let url = receiver.url.clone();
    let post = |id: &'static str, ts: i64, sig: String, body: String| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
    };
    let tampered = post(
        "msg_tampered",
        now,
        sign(&key, "msg_tampered", now, body.as_bytes()),
        body.replace("100", "100000"),
    )
    .await
    .unwrap();
    assert_eq!(tampered.status().as_u16(), 400);
    assert!(receiver.line_with("msg_tampered").await.contains(rejected));
    let old = now - 600;
    let stale = post(
        "msg_stale",
        old,
        sign(&key, "msg_stale", old, body.as_bytes()),
        body.to_owned(),
    )
    .await
    .unwrap();
    assert_eq!(stale.status().as_u16(), 400);
    assert!(receiver.line_with("msg_stale").await.contains(rejected));
    receiver.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_verifies_with_standardwebhooks() {
    drive(
        python,
        r#""event":"accepted""#,
        r#""event":"duplicate""#,
        r#""event":"rejected""#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_verifies_with_standardwebhooks() {
    drive(
        node,
        r#""event":"accepted""#,
        r#""event":"duplicate""#,
        r#""event":"rejected""#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_webhook_worker_listen_prints_verified_deliveries() {
    drive(listen, "✔ ", "= duplicate", "✘ rejected").await;
}
