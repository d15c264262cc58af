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

use crate::cli::{CertArgs, CertCommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::Path;
use std::process::ExitCode;

pub fn run(args: CertArgs) -> ExitCode {
    let result = match args.command {
        CertCommand::Ca { dir, name } => ca(&dir, &name),
        CertCommand::Issue {
            dir,
            name,
            host,
            days,
        } => issue(&dir, &name, &host, days),
    };
    match result {
        Ok(files) => {
            for f in files {
                outln!("wrote {f}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(path: &Path, text: &str, private: bool) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(true).write(true);
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

fn ca(dir: &Path, name: &str) -> Result<Vec<String>, String> {
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
        write(&dir.join("ca.pem"), &cert.pem(), false)?,
        write(&dir.join("ca.key"), &key.serialize_pem(), true)?,
    ])
}

fn issue(dir: &Path, name: &str, hosts: &[String], days: u32) -> Result<Vec<String>, String> {
    if name.is_empty() || name.contains('/') {
        return Err(format!("--name {name:?}: a plain file name is needed"));
    }
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
    for h in hosts {
        let san = match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                h.clone()
                    .try_into()
                    .map_err(|e| format!("--host {h:?}: {e}"))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
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
        write(&dir.join(format!("{name}.pem")), &cert.pem(), false)?,
        write(&dir.join(format!("{name}.key")), &key.serialize_pem(), true)?,
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
