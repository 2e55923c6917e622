//! Invite links: `{server}/join?token={invite token}#secret={base64url key}`. The key
//! travels in the fragment, which browsers and HTTP clients never send to the server.

use url::Url;
use zeroize::Zeroizing;

use crate::key::SessionKey;
use crate::server::ServerUrl;
use crate::{E2eError, Result};

/// The prefix of an invite token.
pub const INVITE_TOKEN_PREFIX: &str = "pvi_";

/// A parsed invite: where to join, the single-use invite token, and the session key.
/// `Debug` shows neither the token nor the key.
pub struct Invite {
    server: ServerUrl,
    token: Zeroizing<String>,
    key: SessionKey,
}

fn check_token(token: &str) -> Result<()> {
    let Some(rest) = token.strip_prefix(INVITE_TOKEN_PREFIX) else {
        return Err(E2eError::InvalidInvite(
            "the token is not an invite token (pvi_…)",
        ));
    };
    // The link is built without percent-encoding, so only URL-safe characters may pass.
    if rest.is_empty()
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(E2eError::InvalidInvite(
            "the token has characters an invite token never has",
        ));
    }
    Ok(())
}

impl Invite {
    /// An invite for `token` (as returned by the server) and the session's key.
    pub fn new(server: ServerUrl, token: &str, key: SessionKey) -> Result<Self> {
        check_token(token)?;
        Ok(Invite {
            server,
            token: Zeroizing::new(token.to_string()),
            key,
        })
    }

    /// Parses a link. Errors say what is wrong without repeating the link, which holds
    /// the key.
    pub fn parse(link: &str) -> Result<Self> {
        let url = Url::parse(link.trim()).map_err(|_| E2eError::InvalidInvite("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(E2eError::InvalidInvite(
                "must start with http:// or https://",
            ));
        }
        let Some(base_path) = url.path().strip_suffix("/join") else {
            return Err(E2eError::InvalidInvite("the path does not end in /join"));
        };
        let mut tokens = url.query_pairs().filter(|(k, _)| k == "token");
        let token = match (tokens.next(), tokens.next()) {
            (Some((_, t)), None) => Zeroizing::new(t.into_owned()),
            (None, _) => return Err(E2eError::InvalidInvite("the ?token= part is missing")),
            (Some(_), Some(_)) => {
                return Err(E2eError::InvalidInvite("the link has more than one token"));
            }
        };
        check_token(&token)?;
        let Some(fragment) = url.fragment() else {
            return Err(E2eError::InvalidInvite(
                "the #secret= part is missing (copy the whole link)",
            ));
        };
        let mut secrets = fragment
            .split('&')
            .filter_map(|p| p.strip_prefix("secret="));
        let secret = match (secrets.next(), secrets.next()) {
            (Some(s), None) => s,
            (None, _) => {
                return Err(E2eError::InvalidInvite(
                    "the #secret= part is missing (copy the whole link)",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(E2eError::InvalidInvite("the link has more than one secret"));
            }
        };
        let key = SessionKey::from_base64url(secret).map_err(|_| {
            E2eError::InvalidInvite("the secret is not a 32-byte base64url key (link cut short?)")
        })?;

        let mut base = url.clone();
        base.set_query(None);
        base.set_fragment(None);
        base.set_path(base_path);
        let server = ServerUrl::from_url(base)
            .map_err(|_| E2eError::InvalidInvite("the server part of the link cannot be used"))?;
        Ok(Invite { server, token, key })
    }

    /// The full link, with the key in the fragment.
    pub fn to_url(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{}/join?token={}#secret={}",
            self.server,
            self.token.as_str(),
            self.key.to_base64url().as_str()
        ))
    }

    /// The server to join on.
    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    /// The single-use invite token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The session key.
    pub fn key(&self) -> &SessionKey {
        &self.key
    }

    /// Takes the key out, dropping the rest.
    pub fn into_key(self) -> SessionKey {
        self.key
    }
}

impl std::fmt::Debug for Invite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invite")
            .field("server", &self.server.as_str())
            .field("token", &"redacted")
            .field("key", &self.key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "pvi_c3ludGhldGljLXRva2VuLW9ubHk";

    fn link(key: &SessionKey) -> String {
        format!(
            "http://127.0.0.1:8420/join?token={TOKEN}#secret={}",
            key.to_base64url().as_str()
        )
    }

    #[test]
    fn build_and_parse_back() {
        let key = SessionKey::generate().unwrap();
        let server = ServerUrl::parse("http://127.0.0.1:8420/").unwrap();
        let invite = Invite::new(server.clone(), TOKEN, key.clone()).unwrap();
        let url = invite.to_url();
        assert_eq!(url.as_str(), link(&key));

        let back = Invite::parse(&url).unwrap();
        assert_eq!(back.server(), &server);
        assert_eq!(back.token(), TOKEN);
        assert_eq!(back.key().fingerprint(), key.fingerprint());
    }

    #[test]
    fn keeps_a_path_prefix() {
        let key = SessionKey::generate().unwrap();
        let server = ServerUrl::parse("https://clinic.example.test/phivault").unwrap();
        let url = Invite::new(server.clone(), TOKEN, key).unwrap().to_url();
        assert!(url.starts_with("https://clinic.example.test/phivault/join?token=pvi_"));
        assert_eq!(Invite::parse(&url).unwrap().server(), &server);
    }

    #[test]
    fn malformed_links_are_refused_without_the_secret() {
        let key = SessionKey::generate().unwrap();
        let secret = key.to_base64url().to_string();
        let good = link(&key);
        let cases = [
            "not a link".to_string(),
            good.replace("http://", "ftp://"),
            good.replace("/join?", "/joint?"),
            good.replace(&format!("token={TOKEN}"), "x=1"),
            good.replace(&format!("token={TOKEN}"), "token=pvs_abc"),
            good.replace(
                &format!("token={TOKEN}"),
                &format!("token={TOKEN}&token={TOKEN}"),
            ),
            good.split('#').next().unwrap().to_string(),
            good.replace("#secret=", "#key="),
            good[..good.len() - 3].to_string(),
            format!("{good}A"),
            format!("{good}&secret={secret}"),
        ];
        for bad in cases {
            let err = Invite::parse(&bad).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(matches!(err, E2eError::InvalidInvite(_)), "{shown}");
            assert!(!shown.contains(&secret), "error shows the secret: {shown}");
            assert!(
                !shown.contains(&secret[..20]),
                "error shows the secret: {shown}"
            );
        }
    }

    #[test]
    fn debug_redacts() {
        let key = SessionKey::generate().unwrap();
        let invite = Invite::parse(&link(&key)).unwrap();
        let shown = format!("{invite:?}");
        assert!(!shown.contains(TOKEN));
        assert!(!shown.contains(key.to_base64url().as_str()));
    }
}
