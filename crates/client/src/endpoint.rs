//! Endpoints as people write them: `host:port`, or `http://host:port` / `https://host:port`
//! with or without a trailing `/`. Whether a client speaks TLS is its TLS settings' choice
//! (one for all its endpoints): an `https://` endpoint only says it must ([`is_https`]), so a
//! tool refuses to speak clear text to it.

/// Why an endpoint is not `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {0:?}: expected host:port")]
    NotHostPort(String),
    #[error("endpoint {endpoint:?}: {port:?} is not a port number")]
    BadPort { endpoint: String, port: String },
}

/// Parses an endpoint; returns `host:port`.
///
/// ```
/// use coordinate_client::parse_endpoint;
/// assert_eq!(parse_endpoint("http://127.0.0.1:12380/").unwrap(), "127.0.0.1:12380");
/// ```
pub fn parse_endpoint(s: &str) -> Result<String, EndpointError> {
    let trimmed = s.trim();
    let bare = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    let Some((host, port)) = bare.rsplit_once(':') else {
        return Err(EndpointError::NotHostPort(s.to_string()));
    };
    if host.is_empty() || bare.contains('/') {
        return Err(EndpointError::NotHostPort(s.to_string()));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(bare.to_string()),
        _ => Err(EndpointError::BadPort {
            endpoint: s.to_string(),
            port: port.to_string(),
        }),
    }
}

/// True if the endpoint is written `https://…`: it must be spoken to over TLS.
pub fn is_https(s: &str) -> bool {
    s.trim().starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("127.0.0.1:12380").unwrap(),
            "127.0.0.1:12380"
        );
        assert_eq!(
            parse_endpoint("http://127.0.0.1:12380/").unwrap(),
            "127.0.0.1:12380"
        );
        assert_eq!(parse_endpoint(" localhost:1 ").unwrap(), "localhost:1");
        assert_eq!(parse_endpoint("[::1]:80").unwrap(), "[::1]:80");
        assert!(parse_endpoint("127.0.0.1").is_err());
        assert!(parse_endpoint(":80").is_err());
        assert!(parse_endpoint("host:0").is_err());
        assert!(parse_endpoint("host:http").is_err());
        assert_eq!(parse_endpoint("https://host:443/").unwrap(), "host:443");
        assert!(is_https(" https://host:443") && !is_https("http://host:1") && !is_https("h:1"));
        assert!(parse_endpoint("http://host:80/v1").is_err());
    }

    #[test]
    fn errors_read_as_before() {
        assert_eq!(
            parse_endpoint("nohost").unwrap_err().to_string(),
            "endpoint \"nohost\": expected host:port"
        );
        assert_eq!(
            parse_endpoint("h:x").unwrap_err().to_string(),
            "endpoint \"h:x\": \"x\" is not a port number"
        );
    }
}
