//! TLS to PostgreSQL, as libpq users expect from `sslmode` and
//! `sslrootcert`, against a cluster of its own that accepts TLS only.

use pg_webhook_tests::{within, Receiver, RunningWorker, TestCa, TlsCluster};
use pg_webhook_worker::{db, Config};

fn config(port: u16, extra: &str) -> Config {
    Config::for_database(&format!(
        "host=localhost port={port} user=postgres dbname=postgres {extra}"
    ))
    .unwrap_or_else(|e| panic!("{extra}: {e}"))
}

async fn connects(c: &Config) -> Result<(), String> {
    match db::connect::connect(&c.pg, &c.pg_tls).await {
        Ok(client) => client
            .simple_query("select 1")
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        Err(e) => Err(format!("{:?}", e.cause())),
    }
}

/// verify-ca and verify-full both refuse the server's certificate when
/// told to trust only `root`, which did not sign it.
async fn refused_by_both_verify_modes(port: u16, root: &std::path::Path) {
    for mode in ["verify-ca", "verify-full"] {
        let refused = connects(&config(
            port,
            &format!("sslmode={mode} sslrootcert={}", root.display()),
        ))
        .await
        .unwrap_err();
        assert!(
            refused.to_lowercase().contains("certificate"),
            "{mode}: {refused}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_and_sslrootcert_work_as_in_libpq() {
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let cluster = TlsCluster::start(&ca);
    let root = ca.write_ca_file();
    let other_root = other_ca.write_ca_file();
    let port = cluster.port;

    // The server takes TLS only: a plain connection is refused by its rules.
    let refused = connects(&config(port, "sslmode=disable"))
        .await
        .unwrap_err();
    assert!(refused.contains("no pg_hba.conf entry"), "{refused}");
    // require: encrypted, certificate not checked (no root given).
    connects(&config(port, "sslmode=require")).await.unwrap();
    // prefer (libpq's default) takes TLS when offered.
    connects(&config(port, "")).await.unwrap();
    // verify-full: the chain and the name.
    let full = format!("sslmode=verify-full sslrootcert={}", root.display());
    connects(&config(port, &full)).await.unwrap();
    // A certificate that does not name the host is refused by verify-full,
    // taken by verify-ca (the chain is all it checks).
    let wrong_name = |mode: &str, root: &std::path::Path| {
        Config::for_database(&format!(
            "host=db.invalid hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres sslmode={mode} sslrootcert={}",
            root.display()
        ))
        .unwrap()
    };
    let refused = connects(&wrong_name("verify-full", &root))
        .await
        .unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    connects(&wrong_name("verify-ca", &root)).await.unwrap();
    // A certificate from a root not trusted is refused by both.
    refused_by_both_verify_modes(port, &other_root).await;
    // So does require once a root file is given (libpq: it then checks as verify-ca).
    let refused = connects(&config(
        port,
        &format!("sslmode=require sslrootcert={}", other_root.display()),
    ))
    .await
    .unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");

    // And the worker delivers over it, end to end.
    let admin = config(port, &full);
    let client = db::connect::connect(&admin.pg, &admin.pg_tls)
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    pg_webhook_tests::install_over(&client).await;
    client
        .query_one(
            "select endpoint_id from webhook_subscribe($1)",
            &[&receiver.url("/")],
        )
        .await
        .unwrap();
    let mut worker_config = config(port, &full);
    worker_config.allow_private_targets = true;
    worker_config.poll_interval = std::time::Duration::from_millis(200);
    let worker = RunningWorker::start(worker_config);
    client
        .batch_execute("select webhook_publish('tls.works', '{}')")
        .await
        .unwrap();
    let got = within(
        "the delivery over a verify-full connection",
        receiver.wait_for(1),
    )
    .await;
    assert_eq!(got.len(), 1);
    worker.stop().await;
    let _ = std::fs::remove_file(root);
    let _ = std::fs::remove_file(other_root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_version_1_certificate_is_taken_as_libpq_takes_it() {
    // Citus turns TLS on with a self-signed version-1 certificate on every
    // node; webpki parses only version 3, and rustls's signature helpers
    // failed the handshake (UnsupportedCertVersion) where libpq connects.
    // TLS 1.2 here: the version with the worker's own signature check
    // (TLS 1.3, the default, is exercised by the test above).
    let (cert, key) = pg_webhook_tests::version_1_certificate();
    let cluster =
        TlsCluster::start_with_pem(&cert, &key, &["ssl_max_protocol_version = 'TLSv1.2'"]);
    let port = cluster.port;
    for mode in ["", "sslmode=prefer", "sslmode=require"] {
        assert_eq!(connects(&config(port, mode)).await, Ok(()), "{mode:?}");
    }
    // verify-ca and verify-full stay strict: a root that did not sign it.
    let other = TestCa::new();
    let other_root = other.write_ca_file();
    refused_by_both_verify_modes(port, &other_root).await;
    let _ = std::fs::remove_file(other_root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_works_as_in_libpq_whatever_the_sslmode() {
    // libpq never uses TLS on a Unix-domain socket, so the default
    // sslmode (prefer), and even require, connect there in the clear.
    let cluster = pg_webhook_tests::OwnCluster::start();
    for extra in ["", "sslmode=prefer", "sslmode=require"] {
        let c = Config::for_database(&format!("{} {extra}", cluster.socket_dsn("postgres")))
            .unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert_eq!(connects(&c).await, Ok(()), "{extra}");
    }
}
