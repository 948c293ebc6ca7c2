//! Database helpers: a fresh database per run, endpoints, waits.

use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// Connects and drives the connection in a task.
pub async fn connect(dsn: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Connects and drives the connection in a task that forwards each notice's
/// message on the channel returned (for auto_explain's plans, sent to the
/// client at NOTICE level).
pub async fn connect_with_notices(
    dsn: &str,
) -> anyhow::Result<(Client, tokio::sync::mpsc::UnboundedReceiver<String>)> {
    let (client, mut connection) = tokio_postgres::connect(dsn, NoTls).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notice(n) = message {
                let _ = tx.send(n.message().to_owned());
            }
        }
    });
    Ok((client, rx))
}

/// How pg_webhook is installed in a benchmark's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Flavor {
    /// `create extension pg_webhook` (its Rust library).
    Extension,
    /// The SQL flavor's script (`bash scripts/package.sh --sql`), run by
    /// the benchmark's superuser: what it costs does not depend on who
    /// installed it.
    Sql,
}

/// A database created for one run, with pg_webhook.
pub struct BenchDb {
    pub dsn: String,
    pub name: String,
    admin: String,
}

impl BenchDb {
    /// With the extension.
    pub async fn new(admin: &str, label: &str) -> anyhow::Result<Self> {
        Self::with(admin, label, Flavor::Extension, None).await
    }

    /// With pg_webhook in `flavor` (the SQL flavor from `sql_script`).
    pub async fn with(
        admin: &str,
        label: &str,
        flavor: Flavor,
        sql_script: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let name = format!("bench_{label}_{}", rand::random::<u32>());
        let c = connect(admin).await?;
        c.batch_execute(&format!("create database {name}")).await?;
        c.batch_execute(&format!(
            "alter database {name} set pg_webhook.allow_private_targets = on"
        ))
        .await?;
        let dsn = format!("{admin} dbname={name}");
        let install = match flavor {
            Flavor::Extension => "create extension pg_webhook".to_owned(),
            Flavor::Sql => {
                let path = sql_script.ok_or_else(|| anyhow::anyhow!("no SQL flavor script"))?;
                let script = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                format!(
                    "{script}; update webhook.settings set value = 'on' where name = 'allow_private_targets'"
                )
            }
        };
        connect(&dsn).await?.batch_execute(&install).await?;
        Ok(Self {
            dsn,
            name,
            admin: admin.to_owned(),
        })
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        connect(&self.dsn).await
    }

    /// Subscribes `n` endpoints to `*` at `url`.
    pub async fn subscribe(&self, c: &Client, url: &str, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            c.execute(
                "select webhook_subscribe($1, name => $2)",
                &[&url, &format!("sink-{i}")],
            )
            .await?;
        }
        Ok(())
    }

    pub async fn drop(self) -> anyhow::Result<()> {
        let c = connect(&self.admin).await?;
        c.batch_execute(&format!("drop database {} with (force)", self.name))
            .await?;
        Ok(())
    }
}

/// Number of deliveries not yet finished, plus events not fanned out yet.
/// A count walks the whole backlog: use it rarely, not to detect the end of
/// a drain (see [`any_pending`]).
pub async fn unfinished(c: &Client) -> anyhow::Result<i64> {
    let sql = "select (select count(*) from webhook.deliveries_open where status = 'pending')
                    + (select count(*) from webhook.events e
                       where e.txid >= coalesce((select prev_xmax from webhook.fanout_state), 0))";
    Ok(c.query_one(sql, &[]).await?.get(0))
}

/// Whether anything is left to do: a pending delivery, or an event the
/// fan-out has not reached. Index probes only, cheap enough to ask every
/// few ms without disturbing what is measured.
pub async fn any_pending(c: &Client) -> anyhow::Result<bool> {
    let sql = "select exists (select 1 from webhook.deliveries_open where status = 'pending')
                   or exists (select 1 from webhook.events e
                              where e.txid >= coalesce((select prev_xmax from webhook.fanout_state), 0))";
    Ok(c.query_one(sql, &[]).await?.get(0))
}

/// Waits until no delivery is pending, checking every `every`. Fails after `limit`.
pub async fn wait_drained(
    c: &Client,
    every: Duration,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if !any_pending(c).await? {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "deliveries still pending after {limit:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Fails unless every delivery succeeded (a drain that lost or failed some
/// would measure the wrong thing); `what` names them in the error.
pub async fn ensure_all_succeeded(c: &Client, what: &str) -> anyhow::Result<()> {
    let failed: i64 = c
        .query_one(
            "select count(*) from webhook.deliveries where status <> 'succeeded'",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(failed == 0, "{failed} {what} did not succeed");
    Ok(())
}

/// A table of rows with a 200-byte payload, watched by pg_webhook.
pub async fn watched_table(c: &Client, name: &str) -> anyhow::Result<()> {
    c.batch_execute(&format!(
        "create table {name} (id bigint primary key, payload text not null);
         select webhook_watch('{name}', event_prefix => 'row');"
    ))
    .await?;
    Ok(())
}
