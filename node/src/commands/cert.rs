//! `quorumlite cert`: a CA and certificates for a test or dev cluster.
//!
//! ```text
//! quorumlite cert ca    --dir certs                      # certs/ca.pem, certs/ca.key
//! quorumlite cert issue --dir certs --name node1 --host 10.0.0.1 --host db1.example
//! ```
//!
//! Issued certificates serve both TLS roles (server and client), so one
//! file per node serves its listener and authenticates it to its peers.
//! Keys are written with mode 0600. For production, use your own PKI: a
//! node needs a certificate for its address signed by the cluster CA.
//!
//! Nothing is overwritten without `--force`: a second `cert ca` would
//! replace the CA's key, and every certificate it issued would stop
//! verifying against the new `ca.pem`. Every file is checked before any
//! is written, so a refusal leaves the directory as it was. `cert issue`
//! needs at least one `--host`, each a DNS name or an IP address: clients
//! check the host they dial against these names.

use crate::cli::{CertArgs, CertCommand, CertOutArgs};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(args: CertArgs) -> ExitCode {
    let (result, out) = match args.command {
        CertCommand::Ca { dir, name, out } => (ca(&dir, &name, out.force), out),
        CertCommand::Issue {
            dir,
            name,
            host,
            days,
            out,
        } => (issue(&dir, &name, &host, days, out.force), out),
    };
    report(result, &out)
}

fn report(result: Result<Vec<String>, String>, out: &CertOutArgs) -> ExitCode {
    match result {
        Ok(files) if out.json => {
            outln!("{}", serde_json::json!({ "files": files }));
            ExitCode::SUCCESS
        }
        Ok(files) => {
            for f in files {
                outln!("wrote {f}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            super::output::error(out.json, "BAD_REQUEST", &e);
            ExitCode::FAILURE
        }
    }
}

/// Refuse when any of `paths` exists, unless `force`; `why` says what
/// replacing it would break, `elsewhere` the flags that pick other files.
fn refuse_existing(
    paths: &[PathBuf],
    force: bool,
    why: &str,
    elsewhere: &str,
) -> Result<(), String> {
    if force {
        return Ok(());
    }
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(format!(
            "{} exists; not replaced ({why}): pass --force to replace it, or choose another {elsewhere}",
            p.display()
        )),
        None => Ok(()),
    }
}

/// A `--host`: an IP address or a DNS name.
fn subject_alt_name(host: &str) -> Result<SanType, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if rustls::pki_types::DnsName::try_from(host).is_err() {
        return Err(format!(
            "--host {host:?}: neither an IP address nor a DNS name (letters, digits, '-' and '.', e.g. db1.example.com or 10.0.0.1)"
        ));
    }
    host.to_owned()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|e| format!("--host {host:?}: {e}"))
}

fn write(path: &Path, text: &str, private: bool, force: bool) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    // Without --force, a file that appeared since the check is not
    // replaced either.
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    options.write(true);
    if private {
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.display().to_string())
}

fn ca(dir: &Path, name: &str, force: bool) -> Result<Vec<String>, String> {
    let (pem, key_file) = (dir.join("ca.pem"), dir.join("ca.key"));
    refuse_existing(
        &[pem.clone(), key_file.clone()],
        force,
        "a new CA key cannot sign for the certificates the old one issued: they stop verifying",
        "--dir",
    )?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(vec![
        write(&pem, &cert.pem(), false, force)?,
        write(&key_file, &key.serialize_pem(), true, force)?,
    ])
}

fn issue(
    dir: &Path,
    name: &str,
    hosts: &[String],
    days: u32,
    force: bool,
) -> Result<Vec<String>, String> {
    if name.is_empty() || name.contains('/') {
        return Err(format!("--name {name:?}: a plain file name is needed"));
    }
    if name == "ca" {
        return Err("--name ca: ca.pem and ca.key are the CA's own files".into());
    }
    if hosts.is_empty() {
        return Err(
            "at least one --host (IP address or DNS name) is needed: clients check the host they dial against the certificate's names".into(),
        );
    }
    let sans = hosts
        .iter()
        .map(|h| subject_alt_name(h))
        .collect::<Result<Vec<_>, _>>()?;
    let (pem, key_file) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    refuse_existing(
        &[pem.clone(), key_file.clone()],
        force,
        "a node may be using it",
        "--dir or --name",
    )?;
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).map_err(|e| {
            format!(
                "{}: {e} (make a CA first: quorumlite cert ca --dir {})",
                dir.join(f).display(),
                dir.display()
            )
        })
    };
    let ca_key = KeyPair::from_pem(&read("ca.key")?).map_err(|e| format!("ca.key: {e}"))?;
    let ca_params = CertificateParams::from_ca_cert_pem(&read("ca.pem")?)
        .map_err(|e| format!("ca.pem: {e}"))?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| format!("ca.pem and ca.key do not match: {e}"))?;

    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time_now();
    params.not_before = now;
    params.not_after = now + std::time::Duration::from_secs(u64::from(days) * 86_400);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .map_err(|e| e.to_string())?;
    Ok(vec![
        write(&pem, &cert.pem(), false, force)?,
        write(&key_file, &key.serialize_pem(), true, force)?,
    ])
}

/// Now, as rcgen's date type, a minute early (clock skew between machines).
fn time_now() -> time::OffsetDateTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        - 60;
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_an_ip_address_or_a_dns_name() {
        for ok in ["10.0.0.1", "::1", "localhost", "db1.example.com", "node-2"] {
            assert!(subject_alt_name(ok).is_ok(), "{ok}");
        }
        for bad in ["not a host!", "", "db1..example", "a/b"] {
            let e = subject_alt_name(bad).map(drop).expect_err(bad);
            assert!(
                e.contains("neither an IP address nor a DNS name"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn nothing_is_replaced_without_force_and_the_ca_survives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        ca(d, "CA", false).expect("first CA");
        let key = std::fs::read(d.join("ca.key")).expect("ca.key");
        let e = ca(d, "CA", false).expect_err("second CA");
        assert!(e.contains("ca.pem exists") && e.contains("--force"), "{e}");
        assert_eq!(std::fs::read(d.join("ca.key")).expect("ca.key"), key);
        issue(d, "n1", &["127.0.0.1".into()], 1, false).expect("issue");
        let e = issue(d, "n1", &["127.0.0.1".into()], 1, false).expect_err("again");
        assert!(e.contains("n1.pem exists") && e.contains("--force"), "{e}");
        issue(d, "n1", &["127.0.0.1".into()], 1, true).expect("forced");
        ca(d, "CA", true).expect("forced CA");
        assert_ne!(std::fs::read(d.join("ca.key")).expect("ca.key"), key);
        let e = issue(d, "n2", &[], 1, false).expect_err("no host");
        assert!(e.contains("at least one --host"), "{e}");
    }
}
