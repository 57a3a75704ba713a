//! The CLI's transport is `coordinate_client`'s ([`coordinate_client::Connection`],
//! [`coordinate_client::Endpoints`]); what is left here is the command line's form of its
//! endpoint parser, whose errors are usage messages.

/// `host:port` from `host:port` or `http://host:port[/]`; the error is the usage message.
pub fn parse_endpoint(s: &str) -> Result<String, String> {
    coordinate_client::parse_endpoint(s).map_err(|e| e.to_string())
}
