//! A throwaway certificate authority for TLS receivers and TLS clusters.

/// A certificate authority made up for one test, and a server certificate
/// it signed for `127.0.0.1` and `localhost`.
pub struct TestCa {
    /// The CA certificate, PEM (what the worker is told to trust).
    pub ca_pem: String,
    /// The server certificate and its key, PEM (for PostgreSQL's ssl_cert_file / ssl_key_file).
    pub server_pem: (String, String),
    /// The server certificate and key as rustls takes them (receiver.rs).
    pub(crate) server_cert: rustls::pki_types::CertificateDer<'static>,
    pub(crate) server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestCa {
    /// Generates the CA and the server certificate.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("an IP")));
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        Self {
            ca_pem: ca.pem(),
            server_pem: (cert.pem(), key.serialize_pem()),
            server_cert: cert.der().clone(),
            server_key: rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    /// The CA certificate as the worker's `extra_roots`.
    pub fn roots(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("the CA PEM parses")
    }

    /// Writes the CA certificate to a file and returns its path.
    pub fn write_ca_file(&self) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "pgwh-ca-{}-{}.pem",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, &self.ca_pem).expect("write the CA file");
        path
    }
}

/// A self-signed version-1 certificate for `localhost` and its RSA key
/// (PEM), such as Citus makes for each of its nodes. Made by the `openssl`
/// program: rcgen writes only version-3 certificates.
pub fn version_1_certificate() -> (String, String) {
    let dir = std::env::temp_dir().join(format!(
        "pgwh-v1-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("a directory for the certificate");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run openssl (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-subj",
        "/CN=localhost",
        "-out",
        "csr.pem",
    ]);
    // "x509 -req" without extensions writes a version-1 certificate.
    run(&[
        "x509", "-req", "-in", "csr.pem", "-signkey", "key.pem", "-days", "30", "-out", "cert.pem",
    ]);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("openssl's output");
    let pair = (read("cert.pem"), read("key.pem"));
    assert!(
        pair.0.starts_with("-----BEGIN CERTIFICATE-----"),
        "a certificate"
    );
    let _ = std::fs::remove_dir_all(&dir);
    pair
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
