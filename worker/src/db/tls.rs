//! TLS to PostgreSQL, as libpq users expect it from their connection
//! string: `sslmode` (`disable`, `allow`, `prefer`, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert` (a PEM file of trusted roots, or
//! `system` for the Mozilla roots), in the `key=value` form or as URL query
//! parameters. tokio-postgres itself knows only disable, prefer and
//! require, so these two settings are taken out of the string here and
//! turned into a rustls client configuration (through tokio-postgres-rustls).
//!
//! As in libpq: `require` (and `prefer`) encrypt without checking the
//! certificate, whatever it is (a self-signed version-1 certificate, as
//! Citus makes for its nodes, included), unless `sslrootcert` is given,
//! when `require` checks it as `verify-ca` does; `verify-ca` checks that a
//! trusted root signed the certificate; `verify-full` also checks that it
//! names the host connected to.
//!
//! Must not: open connections (connect.rs does), or interpret any other
//! setting (it only lists the keys a string sets).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use tokio_postgres::config::SslMode as DriverMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server insists (treated as `prefer`: tokio-postgres
    /// cannot start in plain text and upgrade).
    Allow,
    /// TLS when the server offers it, plain otherwise (libpq's default).
    Prefer,
    /// TLS, certificate checked only if `sslrootcert` is given.
    Require,
    /// TLS, certificate signed by a trusted root.
    VerifyCa,
    /// TLS, certificate signed by a trusted root and naming the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "invalid sslmode {other:?}: one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }
}

/// The TLS settings of one connection string, ready to connect with.
#[derive(Clone)]
pub struct PgTls {
    /// The mode asked for.
    pub mode: SslMode,
    connector: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").field("mode", &self.mode).finish()
    }
}

impl Default for PgTls {
    fn default() -> Self {
        Self::disabled()
    }
}

impl PgTls {
    /// No TLS at all.
    pub fn disabled() -> Self {
        Self {
            mode: SslMode::Disable,
            connector: None,
        }
    }

    /// The connector to hand to tokio-postgres; `None` for `disable`.
    pub fn connector(&self) -> Option<MakeRustlsConnect> {
        self.connector.clone()
    }
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (either
/// form); returns the rest, for tokio-postgres, with the driver's mode to
/// set, and the TLS settings. Where the string has neither, `PGSSLMODE` and
/// `PGSSLROOTCERT` (read through `env`) stand in, as in libpq.
pub fn split(dsn: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Split, String> {
    let (rest, mode, root, keys) =
        if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
            split_url(dsn)?
        } else {
            split_key_value(dsn)?
        };
    let from_env = |name: &str| env(name).filter(|v| !v.is_empty());
    let mode = mode.or_else(|| from_env("PGSSLMODE"));
    let root = root.or_else(|| from_env("PGSSLROOTCERT"));
    let mode = match mode {
        Some(m) => SslMode::parse(&m)?,
        None => SslMode::Prefer,
    };
    let driver = match mode {
        SslMode::Disable => DriverMode::Disable,
        SslMode::Allow | SslMode::Prefer => DriverMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverMode::Require,
    };
    let tls = build(mode, root.as_deref())?;
    Ok(Split {
        rest,
        driver_mode: driver,
        tls,
        keys,
    })
}

/// A connection string with its TLS settings taken out (see [`split`]).
#[derive(Debug)]
pub struct Split {
    /// The rest of the string, for tokio-postgres.
    pub rest: String,
    /// The mode to set on tokio-postgres' configuration.
    pub driver_mode: DriverMode,
    /// The TLS settings.
    pub tls: PgTls,
    /// Every key the string set (URL query parameters included), so that
    /// callers can tell a setting given from one left to its default
    /// without reading the string again (nor its password).
    pub keys: Vec<String>,
}

/// `tls` for connecting with `pg`, unless every host of `pg` is a
/// Unix-domain socket: then no TLS (and `pg` set not to ask for it), as
/// libpq does whatever sslmode says. A socket is on the same machine, and a
/// TLS connector would have no host name to check.
pub fn unless_local(pg: &mut tokio_postgres::Config, tls: PgTls) -> PgTls {
    let hosts = pg.get_hosts();
    let local = !hosts.is_empty()
        && hosts
            .iter()
            .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
    if !local {
        return tls;
    }
    pg.ssl_mode(DriverMode::Disable);
    PgTls {
        mode: tls.mode,
        connector: None,
    }
}

/// `key=value` pairs separated by spaces, values optionally single-quoted
/// with `\'` and `\\` escapes (libpq's rules).
fn split_key_value(dsn: &str) -> Result<Parts, String> {
    let mut rest = Vec::new();
    let mut keys = Vec::new();
    let (mut mode, mut root) = (None, None);
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!(
                "missing \"=\" after {key:?} in the connection string"
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut raw = String::new();
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            raw.push(chars.next().unwrap_or('\''));
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted value in the connection string".into()),
                    Some('\'') => {
                        raw.push('\'');
                        break;
                    }
                    Some('\\') => {
                        let escaped = chars.next().ok_or("a connection string ends in \\")?;
                        raw.push('\\');
                        raw.push(escaped);
                        value.push(escaped);
                    }
                    Some(c) => {
                        raw.push(c);
                        value.push(c);
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    let escaped = chars.next().ok_or("a connection string ends in \\")?;
                    raw.push('\\');
                    raw.push(escaped);
                    value.push(escaped);
                    continue;
                }
                raw.push(c);
                value.push(c);
                chars.next();
            }
        }
        keys.push(key.clone());
        match key.as_str() {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(value),
            _ => rest.push(format!("{key}={raw}")),
        }
    }
    Ok((rest.join(" "), mode, root, keys))
}

/// A `postgres://` URL: the two settings are query parameters.
fn split_url(dsn: &str) -> Result<Parts, String> {
    let Some((base, query)) = dsn.split_once('?') else {
        return Ok((dsn.to_owned(), None, None, Vec::new()));
    };
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    let mut keys = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        keys.push(k.to_owned());
        let decoded =
            || percent_decode(v).ok_or_else(|| format!("invalid percent-encoding in {k}"));
        match k {
            "sslmode" => mode = Some(decoded()?),
            "sslrootcert" => root = Some(decoded()?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, root, keys))
}

/// What a connection string splits into: the rest, `sslmode`, `sslrootcert`
/// and every key it set.
type Parts = (String, Option<String>, Option<String>, Vec<String>);

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The rustls configuration for a mode and an optional root file.
fn build(mode: SslMode, root: Option<&str>) -> Result<PgTls, String> {
    if mode == SslMode::Disable {
        return Ok(PgTls::disabled());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match root {
        None => None,
        Some("system") => Some(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        Some(path) => Some(load_roots(path)?),
    };
    let check = match (mode, roots) {
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(format!(
                "sslmode={} needs sslrootcert: a PEM file of the roots to trust, or \"system\"",
                if mode == SslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            ))
        }
        (_, None) => Check::Nothing,
        (SslMode::VerifyFull, Some(r)) => Check::Full(r),
        (_, Some(r)) => Check::Chain(r),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let config = match check {
        Check::Full(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        Check::Chain(roots) => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("TLS set-up: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
        Check::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
    };
    Ok(PgTls {
        mode,
        connector: Some(MakeRustlsConnect::new(config)),
    })
}

enum Check {
    Nothing,
    Chain(rustls::RootCertStore),
    Full(rustls::RootCertStore),
}

fn load_roots(path: &str) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read sslrootcert {path}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
        store
            .add(cert)
            .map_err(|e| format!("sslrootcert {path}: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!("sslrootcert {path} holds no certificate"));
    }
    Ok(store)
}

/// `verify-ca` (and `require` with a root file): the chain must lead to a
/// trusted root; the name in the certificate is not compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` and `prefer` without a root file: encrypted, the certificate
/// taken as it comes (what libpq does); the handshake's signatures are
/// still checked against its public key.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

/// The public key (SubjectPublicKeyInfo, DER) of a certificate of any
/// version. Read with x509-cert because webpki, behind rustls's signature
/// helpers, parses only version-3 certificates and fails the handshake
/// with `UnsupportedCertVersion` on a version-1 one, which OpenSSL (so
/// libpq) takes.
fn public_key(cert: &CertificateDer<'_>) -> Result<Vec<u8>, rustls::Error> {
    use x509_cert::der::{Decode, Encode};
    let bad = |_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
    x509_cert::Certificate::from_der(cert.as_ref())
        .map_err(bad)?
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(bad)
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // rustls offers no TLS 1.2 check by key alone: the same steps as its
        // verify_tls12_signature, with the key read by public_key.
        let spki = public_key(cert)?;
        let spki = SubjectPublicKeyInfoDer::from(spki.as_slice());
        let key = webpki::RawPublicKeyEntity::try_from(&spki)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let candidates = self
            .0
            .signature_verification_algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algs)| *algs)
            .ok_or(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ))?;
        candidates
            .iter()
            .find(|alg| {
                key.verify_signature(**alg, message, dss.signature())
                    .is_ok()
            })
            .map(|_| HandshakeSignatureValid::assertion())
            .ok_or(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature,
            ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let spki = public_key(cert)?;
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(spki.as_slice()),
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn pgsslmode_and_pgsslrootcert_stand_in_for_missing_settings() {
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("require".to_owned()),
            "PGSSLROOTCERT" => Some("system".to_owned()),
            _ => None,
        };
        let Split {
            driver_mode: driver,
            tls,
            ..
        } = split("host=db", &env).unwrap();
        assert!(matches!(driver, DriverMode::Require));
        assert_eq!(tls.mode, SslMode::Require);
        let Split { tls, .. } = split("host=db sslmode=disable", &env).unwrap();
        assert_eq!(tls.mode, SslMode::Disable, "the connection string wins");
    }

    #[test]
    fn a_unix_socket_gets_no_tls_whatever_the_mode() {
        let Split {
            rest,
            driver_mode: mode,
            tls,
            ..
        } = split("host=/var/run/postgresql dbname=x sslmode=require", &no_env).unwrap();
        let mut pg: tokio_postgres::Config = rest.parse().unwrap();
        pg.ssl_mode(mode);
        let tls = unless_local(&mut pg, tls);
        assert!(tls.connector().is_none());
        assert!(matches!(pg.get_ssl_mode(), DriverMode::Disable));
        let Split {
            rest,
            driver_mode: mode,
            tls,
            ..
        } = split("host=db dbname=x sslmode=require", &no_env).unwrap();
        let mut pg: tokio_postgres::Config = rest.parse().unwrap();
        pg.ssl_mode(mode);
        assert!(unless_local(&mut pg, tls).connector().is_some());
    }

    #[test]
    fn takes_the_ssl_settings_out_of_key_value_strings() {
        let Split {
            rest,
            driver_mode: driver,
            tls,
            ..
        } = split(
            "host=db port=5432 sslmode=require password='a b\\'c' dbname=x",
            &no_env,
        )
        .unwrap();
        assert_eq!(rest, "host=db port=5432 password='a b\\'c' dbname=x");
        assert!(matches!(driver, DriverMode::Require));
        assert_eq!(tls.mode, SslMode::Require);
        assert!(tls.connector().is_some());
        let Split {
            rest,
            driver_mode: driver,
            tls,
            ..
        } = split("host=db", &no_env).unwrap();
        assert_eq!(rest, "host=db");
        assert!(matches!(driver, DriverMode::Prefer));
        assert_eq!(tls.mode, SslMode::Prefer, "libpq's default");
        let Split {
            driver_mode: driver,
            tls,
            ..
        } = split("host=db sslmode=disable", &no_env).unwrap();
        assert!(matches!(driver, DriverMode::Disable) && tls.connector().is_none());
    }

    #[test]
    fn takes_the_ssl_settings_out_of_urls() {
        let Split {
            rest,
            driver_mode: driver,
            tls,
            ..
        } = split(
            "postgres://u:p@db:5432/x?sslmode=require&application_name=w",
            &no_env,
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/x?application_name=w");
        assert!(matches!(driver, DriverMode::Require));
        assert_eq!(tls.mode, SslMode::Require);
        let Split { rest, .. } = split("postgresql://db/x?sslmode=prefer", &no_env).unwrap();
        assert_eq!(rest, "postgresql://db/x");
    }

    #[test]
    fn refuses_what_libpq_refuses() {
        assert!(split("host=db sslmode=sometimes", &no_env)
            .unwrap_err()
            .contains("invalid sslmode"));
        assert!(split("host=db sslmode=verify-full", &no_env)
            .unwrap_err()
            .contains("needs sslrootcert"));
        assert!(split(
            "host=db sslmode=verify-ca sslrootcert=/nonexistent/root.crt",
            &no_env
        )
        .unwrap_err()
        .contains("cannot read sslrootcert"));
        assert!(split("host=db sslmode=verify-full sslrootcert=system", &no_env).is_ok());
    }
}
