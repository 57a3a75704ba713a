//! Peer URLs and node ids: the strict forms members are stored, compared and dialled under.

/// The largest node id. `--id N` is an index into a `--cluster` list of at least N URLs, and
/// Linux caps one command-line argument at 128 KiB (about 5,000 such URLs): a member with a
/// larger id could never be started, so adding one would leave a phantom voter for good.
pub const MAX_NODE_ID: u64 = 4096;

/// Parses a node id strictly: decimal digits only (no sign, no leading zero, no spaces),
/// between 1 and [`MAX_NODE_ID`].
///
/// ```
/// use coordinate_raft::peers::parse_node_id;
/// assert_eq!(parse_node_id("4"), Ok(4));
/// assert!(parse_node_id("+4").is_err());
/// assert!(parse_node_id("04").is_err());
/// assert!(parse_node_id("0").is_err());
/// assert!(parse_node_id("18446744073709551615").is_err());
/// ```
pub fn parse_node_id(s: &str) -> Result<u64, String> {
    let canonical = !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
    match s.parse::<u64>() {
        Ok(id) if canonical && id <= MAX_NODE_ID => Ok(id),
        _ => Err(format!(
            "{s:?} is not a node id (a positive integer up to {MAX_NODE_ID})"
        )),
    }
}

/// Extracts `host:port` from an `http://host:port` or `https://host:port` peer URL. Strict:
/// no user info, path, query or fragment, a port from 1 to 65535, and a host that is an IP
/// address or a DNS name.
///
/// ```
/// use coordinate_raft::peers::peer_addr;
/// assert_eq!(peer_addr("http://127.0.0.1:12379").as_deref(), Ok("127.0.0.1:12379"));
/// assert_eq!(peer_addr("https://node-1.local:2380").as_deref(), Ok("node-1.local:2380"));
/// assert_eq!(peer_addr("http://[::1]:12379/").as_deref(), Ok("[::1]:12379"));
/// assert!(peer_addr("ftp://127.0.0.1:12379").is_err());
/// assert!(peer_addr("127.0.0.1:12379").is_err());
/// assert!(peer_addr("http://127.0.0.1").is_err());
/// assert!(peer_addr("http://127.0.0.1:0").is_err());
/// assert!(peer_addr("http://user@127.0.0.1:1").is_err());
/// ```
pub fn peer_addr(url: &str) -> Result<String, String> {
    parse(url).map(|(_, addr)| addr)
}

/// The scheme of a valid peer URL: `"http"`, or `"https"` for a peer speaking TLS.
pub fn peer_scheme(url: &str) -> Result<&'static str, String> {
    parse(url).map(|(scheme, _)| scheme)
}

/// The scheme and `host:port` of a peer URL (see [`peer_addr`]).
fn parse(url: &str) -> Result<(&'static str, String), String> {
    if url.contains(['@', '#', ' ']) || url.chars().any(|c| c.is_control()) {
        return Err(
            "a peer URL is http(s)://host:port, without user info, spaces or fragment".into(),
        );
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => "http",
        Some("https") => "https",
        _ => return Err("the scheme must be http:// or https://".into()),
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or("missing host")?;
    if !valid_host(host) {
        return Err(format!("{host:?} is not an IP address or a DNS name"));
    }
    let port = uri.port_u16().ok_or("missing port")?;
    if port == 0 {
        return Err("port 0 is not a peer port".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("a peer URL has no path".into());
    }
    Ok((scheme, format!("{host}:{port}")))
}

/// The one spelling of a peer URL that members are stored and compared under
/// (`http(s)://host:port`, no trailing slash), so one address cannot be added twice.
pub fn canonical_peer_url(url: &str) -> Result<String, String> {
    parse(url).map(|(scheme, addr)| format!("{scheme}://{addr}"))
}

/// An IPv4 or bracketed IPv6 literal, or a DNS name (letters, digits, `-` and `.`).
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
