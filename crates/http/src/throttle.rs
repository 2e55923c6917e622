//! Throttling of the authentication endpoints: per client address, per account, and of
//! failed bearer authentication.
//!
//! Limits are token buckets (GCRA, from the `governor` crate) kept in memory, so they
//! are per server process: each process behind a load balancer keeps its own count, and
//! a restart forgets them. A bucket holds `limit` requests and refills completely over
//! `window` (one request every `window / limit`).
//!
//! - Every sign-in endpoint (`/auth/magic-link`, `/auth/magic-link/verify`,
//!   `/auth/refresh`, `/auth/mfa/verify`, `/auth/mfa/enroll`,
//!   `/auth/mfa/enroll/confirm`) has a bucket per client address.
//! - `POST /auth/magic-link` also has one per account, keyed by a salted SHA-256 of the
//!   tenant slug and the normalized address (the address is never kept in clear, and the
//!   salt is random per process); the second-factor endpoints have one per challenge's
//!   user.
//! - A bearer token that fails to authenticate counts against its client address.
//!
//! Over a limit the answer is 429 `throttled` with `Retry-After`, and an `auth.failed`
//! event with the reason `throttled` is written. The client address is the TCP peer:
//! behind a reverse proxy every client shares the proxy's address.

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use phivault_audit::{Action, Actor, ActorKind, Outcome};
use phivault_store::TenantId;
use sha2::{Digest, Sha256};

use crate::audit::Origin;
use crate::{ApiError, AppState};

/// Throttling limits. Each limit is a number of requests per `window`; zero is taken
/// as one.
#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    /// The window every limit is counted over (one minute by default).
    pub window: Duration,
    /// Requests per client address to each sign-in endpoint (10 by default).
    pub per_ip: u32,
    /// Requests per account: sign-in links per tenant and address, and second-factor
    /// attempts per user, to each endpoint (5 by default).
    pub per_account: u32,
    /// Failed bearer authentications per client address (30 by default).
    pub bearer_failures_per_ip: u32,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            window: Duration::from_secs(60),
            per_ip: 10,
            per_account: 5,
            bearer_failures_per_ip: 30,
        }
    }
}

/// A throttled authentication endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    MagicLink,
    MagicLinkVerify,
    Refresh,
    MfaVerify,
    MfaEnroll,
    MfaConfirm,
    DeviceChallenge,
    DeviceRegister,
    E2eJoin,
    StaffLogin,
    StaffMfaVerify,
    StaffMfaEnroll,
    StaffMfaConfirm,
}

impl Endpoint {
    /// The route template, named in the audit event.
    pub(crate) fn route(self) -> &'static str {
        match self {
            Endpoint::MagicLink => "/api/v1/auth/magic-link",
            Endpoint::MagicLinkVerify => "/api/v1/auth/magic-link/verify",
            Endpoint::Refresh => "/api/v1/auth/refresh",
            Endpoint::MfaVerify => "/api/v1/auth/mfa/verify",
            Endpoint::MfaEnroll => "/api/v1/auth/mfa/enroll",
            Endpoint::MfaConfirm => "/api/v1/auth/mfa/enroll/confirm",
            Endpoint::DeviceChallenge => "/api/v1/devices/challenge",
            Endpoint::DeviceRegister => "/api/v1/devices/register",
            Endpoint::E2eJoin => "/api/v1/e2e/join",
            Endpoint::StaffLogin => "/api/v1/staff/auth/login",
            Endpoint::StaffMfaVerify => "/api/v1/staff/auth/mfa/verify",
            Endpoint::StaffMfaEnroll => "/api/v1/staff/auth/mfa/enroll",
            Endpoint::StaffMfaConfirm => "/api/v1/staff/auth/mfa/enroll/confirm",
        }
    }
}

/// How often (in checks) buckets that have refilled are dropped, bounding memory.
const SWEEP_EVERY: u64 = 1024;

/// The in-memory limiters of one server process.
pub struct Throttle {
    config: ThrottleConfig,
    per_ip: DefaultKeyedRateLimiter<(Endpoint, IpAddr)>,
    per_account: DefaultKeyedRateLimiter<(Endpoint, [u8; 32])>,
    bearer: DefaultKeyedRateLimiter<IpAddr>,
    salt: [u8; 16],
    checks: AtomicU64,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn quota(limit: u32, window: Duration) -> Quota {
    let limit = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
    let window = window.max(Duration::from_millis(1));
    Quota::with_period(window / limit.get())
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(limit)
}

impl Throttle {
    /// Limiters with these limits.
    pub fn new(config: ThrottleConfig) -> Self {
        Throttle {
            per_ip: RateLimiter::keyed(quota(config.per_ip, config.window)),
            per_account: RateLimiter::keyed(quota(config.per_account, config.window)),
            bearer: RateLimiter::keyed(quota(config.bearer_failures_per_ip, config.window)),
            // Random per process: the account keys cannot be matched against a list of
            // addresses without it.
            salt: *uuid::Uuid::new_v4().as_bytes(),
            checks: AtomicU64::new(0),
            config,
        }
    }

    /// The limits.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    fn check<K: Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.per_ip.retain_recent();
            self.per_account.retain_recent();
            self.bearer.retain_recent();
        }
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn ip_check(&self, endpoint: Endpoint, ip: Option<IpAddr>) -> Result<(), Duration> {
        let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.check(&self.per_ip, &(endpoint, ip))
    }

    /// The salted hash of an account key's parts (never kept in clear).
    fn account_key(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        for part in parts {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    fn account_check(&self, endpoint: Endpoint, parts: &[&[u8]]) -> Result<(), Duration> {
        let key = self.account_key(parts);
        self.check(&self.per_account, &(endpoint, key))
    }

    /// Counts a failed bearer authentication from `ip`; `Err` with the wait once the
    /// address is over its limit.
    pub(crate) fn bearer_failure(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.check(&self.bearer, &ip)
    }
}

/// The 429 answer, with `Retry-After` in whole seconds (at least one).
pub(crate) fn throttled(wait: Duration) -> ApiError {
    ApiError::throttled(
        wait,
        "too many sign-in attempts; retry after the time in Retry-After",
    )
}

fn anonymous() -> Actor {
    Actor {
        kind: ActorKind::Anonymous,
        id: String::new(),
        role: String::new(),
    }
}

/// Writes the `auth.failed` event of a throttled request and answers 429.
async fn refuse(
    st: &AppState,
    origin: &Origin,
    tenant: Option<TenantId>,
    actor: Actor,
    endpoint: Endpoint,
    wait: Duration,
) -> ApiError {
    let event = origin.event(
        st,
        tenant,
        actor,
        Action::AuthFailed,
        ("route", endpoint.route().to_string()),
        (Outcome::Denied, Some("throttled")),
    );
    if let Err(e) = st.auditor.record(event).await {
        tracing::error!(error = %e, "could not record a throttled request in the audit trail");
    }
    throttled(wait)
}

fn peer(origin: &Origin) -> Option<IpAddr> {
    origin.source.ip.parse().ok()
}

/// Counts a request to `endpoint` against its client address; over the limit, records
/// the refusal on the platform chain and answers 429.
pub(crate) async fn per_ip(
    st: &AppState,
    origin: &Origin,
    endpoint: Endpoint,
) -> Result<(), ApiError> {
    match st.throttle.ip_check(endpoint, peer(origin)) {
        Ok(()) => Ok(()),
        Err(wait) => Err(refuse(st, origin, None, anonymous(), endpoint, wait).await),
    }
}

/// Counts a staff sign-in against the address it names (case-folded), whether or not a
/// staff member has it; over the limit, records the refusal on the platform chain and
/// answers 429. The address itself is not recorded.
pub(crate) async fn per_staff_account(
    st: &AppState,
    origin: &Origin,
    email: &str,
) -> Result<(), ApiError> {
    let email = email.trim().to_ascii_lowercase();
    match st
        .throttle
        .account_check(Endpoint::StaffLogin, &[b"staff", email.as_bytes()])
    {
        Ok(()) => Ok(()),
        Err(wait) => Err(refuse(st, origin, None, anonymous(), Endpoint::StaffLogin, wait).await),
    }
}

/// Counts a second-factor request against the challenge's user; `Err` with the wait
/// once the user is over the limit. The caller closes its transaction (SQLite has one
/// writer) and then answers with [`refuse_user`].
pub(crate) fn user_check(
    st: &AppState,
    endpoint: Endpoint,
    tenant: TenantId,
    user: phivault_domain::UserId,
) -> Result<(), Duration> {
    let tenant_bytes = tenant.as_uuid().into_bytes();
    st.throttle.account_check(
        endpoint,
        &[b"user", &tenant_bytes, user.to_string().as_bytes()],
    )
}

/// Records a second-factor request refused by [`user_check`] in the user's tenant chain
/// and answers 429.
pub(crate) async fn refuse_user(
    st: &AppState,
    origin: &Origin,
    endpoint: Endpoint,
    tenant: TenantId,
    user: phivault_domain::UserId,
    wait: Duration,
) -> ApiError {
    let actor = Actor {
        kind: ActorKind::User,
        id: user.to_string(),
        role: String::new(),
    };
    refuse(st, origin, Some(tenant), actor, endpoint, wait).await
}

/// Counts a sign-in link request against its account (tenant slug and normalized
/// address, hashed). Over the limit the answer is 429 at once; the refusal is recorded
/// in the background (in the tenant's chain if the slug names a tenant, else on the
/// platform chain), so the answer's timing does not depend on the tenant.
pub(crate) fn per_link_account(
    st: &AppState,
    origin: Origin,
    slug: &str,
    email: &str,
) -> Result<Origin, ApiError> {
    // Case-folded, so `A@x` and `a@x` share a bucket.
    let email = email.trim().to_ascii_lowercase();
    let check = st.throttle.account_check(
        Endpoint::MagicLink,
        &[b"link", slug.as_bytes(), email.as_bytes()],
    );
    let Err(wait) = check else {
        return Ok(origin);
    };
    let job = st.clone();
    let slug = slug.to_string();
    tokio::spawn(async move {
        let tenant = match job.db.begin_platform(phivault_store::TxMode::Read).await {
            Ok(mut tx) => {
                let found = phivault_domain::tenants::find(&mut tx, &slug).await.ok();
                let _ = tx.commit().await;
                found.map(|t| t.id)
            }
            Err(_) => None,
        };
        refuse(
            &job,
            &origin,
            tenant,
            anonymous(),
            Endpoint::MagicLink,
            wait,
        )
        .await;
    });
    Err(throttled(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_per_key_and_say_how_long_to_wait() {
        let t = Throttle::new(ThrottleConfig {
            window: Duration::from_secs(60),
            per_ip: 2,
            per_account: 1,
            bearer_failures_per_ip: 1,
        });
        let a = Some("192.0.2.1".parse().unwrap());
        let b = Some("192.0.2.2".parse().unwrap());
        assert!(t.ip_check(Endpoint::Refresh, a).is_ok());
        assert!(t.ip_check(Endpoint::Refresh, a).is_ok());
        let wait = t.ip_check(Endpoint::Refresh, a).unwrap_err();
        assert!(wait > Duration::from_secs(20) && wait <= Duration::from_secs(30));
        assert!(t.ip_check(Endpoint::Refresh, b).is_ok());
        assert!(t.ip_check(Endpoint::MfaVerify, a).is_ok());

        assert!(
            t.account_check(Endpoint::MagicLink, &[b"s", b"x@y"])
                .is_ok()
        );
        assert!(
            t.account_check(Endpoint::MagicLink, &[b"s", b"x@y"])
                .is_err()
        );
        assert!(
            t.account_check(Endpoint::MagicLink, &[b"s", b"z@y"])
                .is_ok()
        );
        // Length-prefixed parts: ("ab", "c") and ("a", "bc") are different accounts.
        assert_ne!(t.account_key(&[b"ab", b"c"]), t.account_key(&[b"a", b"bc"]));

        assert!(t.bearer_failure(a).is_ok());
        assert!(t.bearer_failure(a).is_err());
        assert!(t.bearer_failure(b).is_ok());
    }

    #[test]
    fn zero_means_one() {
        let t = Throttle::new(ThrottleConfig {
            window: Duration::ZERO,
            per_ip: 0,
            per_account: 0,
            bearer_failures_per_ip: 0,
        });
        assert!(t.ip_check(Endpoint::Refresh, None).is_ok());
    }
}
