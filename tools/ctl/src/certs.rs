//! `coordinatectl certs`: a CA and certificates for a local or test cluster, written as PEM
//! files — one per member (its peer URL as a URI name, so members on one host are told apart,
//! and its hosts), one for a client. A development convenience: a production cluster's
//! certificates come from the operator's own CA.

use std::path::Path;

use coordinate_tls::devcerts::{Authority, Subject};

use crate::{Exit, Failed};

/// The host part of a URL (`https://host:port`), for the certificate's host names.
fn host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Writes `ca.pem`, `node-<i>.pem` and `node-<i>-key.pem` for each of `peers` (member `i`
/// is the `i`-th, as in `--cluster`), and `client.pem`, `client-key.pem`, into `dir`, which
/// must not hold any of them (nothing is overwritten). Returns the files written.
pub fn write(dir: &Path, peers: &[String], hosts: &[String]) -> Result<Vec<String>, Failed> {
    let failed = |e: String| Failed::new(Exit::Unavailable, e);
    let ca = Authority::new("coordinate development CA").map_err(|e| failed(e.to_string()))?;
    let mut files = vec![("ca.pem".to_string(), ca.cert_pem())];
    for (i, url) in peers.iter().enumerate() {
        let id = i + 1;
        let mut names: Vec<String> = host(url).into_iter().collect();
        names.extend(hosts.iter().cloned());
        let issued = ca
            .issue(&Subject {
                name: format!("coordinate member {id}"),
                hosts: names,
                uris: vec![url.trim_end_matches('/').to_string()],
                expired: false,
            })
            .map_err(|e| failed(format!("member {id} ({url}): {e}")))?;
        files.push((format!("node-{id}.pem"), issued.cert_pem));
        files.push((format!("node-{id}-key.pem"), issued.key_pem));
    }
    let client = ca
        .issue(&Subject {
            name: "coordinate client".into(),
            ..Subject::default()
        })
        .map_err(|e| failed(e.to_string()))?;
    files.push(("client.pem".into(), client.cert_pem));
    files.push(("client-key.pem".into(), client.key_pem));

    std::fs::create_dir_all(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    if let Some((name, _)) = files.iter().find(|(n, _)| dir.join(n).exists()) {
        return Err(Failed::new(
            Exit::Usage,
            format!(
                "{} exists; not overwriting certificates",
                dir.join(name).display()
            ),
        ));
    }
    for (name, text) in &files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        if name.ends_with("-key.pem") {
            restrict(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(files.into_iter().map(|(n, _)| n).collect())
}

/// Keys are readable by their owner only.
fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordinate_tls::identity;
    use coordinate_tls::pem;

    #[test]
    fn each_member_certificate_proves_its_member_only() {
        let dir = tempfile::tempdir().unwrap();
        let peers = vec![
            "https://127.0.0.1:12379".to_string(),
            "https://127.0.0.1:22379".to_string(),
        ];
        let written = write(dir.path(), &peers, &["localhost".into()]).unwrap();
        assert_eq!(written.len(), 7);
        let cert = |n: &str| pem::certificates(&dir.path().join(n)).unwrap().remove(0);
        assert!(identity::check_member(&cert("node-1.pem"), &peers[0]).is_ok());
        assert!(identity::check_member(&cert("node-1.pem"), &peers[1]).is_err());
        assert!(identity::check_member(&cert("node-2.pem"), &peers[1]).is_ok());
        assert!(pem::private_key(&dir.path().join("client-key.pem")).is_ok());
        assert!(pem::trusted_roots(&dir.path().join("ca.pem")).is_ok());
        // A second run refuses to overwrite.
        let again = write(dir.path(), &peers, &[]).err().map(|f| f.message);
        assert!(again.is_some_and(|m| m.contains("not overwriting")));
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(host("https://127.0.0.1:2380").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("https://[::1]:2380/").as_deref(), Some("::1"));
        assert_eq!(
            host("https://node.example:2380").as_deref(),
            Some("node.example")
        );
        assert_eq!(host("https://:1"), None);
    }
}
