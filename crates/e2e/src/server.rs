//! The base URL of a phivault server, in the one form used for requests, invite links
//! and key-store records.

use url::Url;

use crate::{E2eError, Result};

/// A server's base URL: http or https, no credentials, query or fragment, and no
/// trailing slash (a path prefix such as `https://host/phivault` is kept).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerUrl(String);

impl ServerUrl {
    /// Parses and normalizes a base URL such as `http://127.0.0.1:8420/`.
    pub fn parse(text: &str) -> Result<Self> {
        let url = Url::parse(text.trim()).map_err(|_| E2eError::InvalidServer("not a URL"))?;
        Self::from_url(url)
    }

    /// Normalizes a parsed URL, dropping nothing silently: a query or fragment is refused.
    pub fn from_url(url: Url) -> Result<Self> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(E2eError::InvalidServer(
                "must start with http:// or https://",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(E2eError::InvalidServer("has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(E2eError::InvalidServer(
                "must not contain a user name or password",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(E2eError::InvalidServer("must not contain ? or #"));
        }
        Ok(ServerUrl(url.as_str().trim_end_matches('/').to_string()))
    }

    /// The base URL without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute URL of `path` (which starts with `/`) on this server.
    pub fn endpoint(&self, path: &str) -> Result<Url> {
        Url::parse(&format!("{}{path}", self.0))
            .map_err(|_| E2eError::InvalidServer("cannot build a request URL"))
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ServerUrl {
    type Err = E2eError;

    fn from_str(s: &str) -> Result<Self> {
        ServerUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        let s = ServerUrl::parse("http://127.0.0.1:8420/").unwrap();
        assert_eq!(s.as_str(), "http://127.0.0.1:8420");
        assert_eq!(
            s.endpoint("/api/v1/e2e/join").unwrap().as_str(),
            "http://127.0.0.1:8420/api/v1/e2e/join"
        );
        let p = ServerUrl::parse("https://example.test/phivault/").unwrap();
        assert_eq!(p.as_str(), "https://example.test/phivault");
        assert_eq!(
            ServerUrl::parse("HTTPS://Example.TEST").unwrap().as_str(),
            "https://example.test"
        );
    }

    #[test]
    fn refuses() {
        for bad in [
            "",
            "127.0.0.1:8420",
            "ftp://example.test",
            "https://user:pw@example.test",
            "https://example.test/?a=b",
            "https://example.test/#x",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
