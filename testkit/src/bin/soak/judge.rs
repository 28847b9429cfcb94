//! How an answer is judged: what its request deserves, and the tolerance while the IdP is
//! disturbed or a key has just started signing.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::chaos::ChaosState;
use crate::mix::Kind;
use crate::{REDISCOVERY_S, TIMEOUT_MS};

/// 503s are tolerated for a disturbance's length after it ends (the filter's backoff, doubling
/// from 1 s, can push its first retry that far past the end) plus this: one callout timeout.
pub const GRACE_EXTRA: Duration = Duration::from_millis(TIMEOUT_MS);
/// After a rotation, a token signed with the new key may be refused until the filter refetches
/// the key set, which it does at most once per `rediscovery_lifetime` (unknown-kid tokens in
/// the mix spend that allowance too), plus a callout's time.
pub const NEW_KEY_WINDOW: Duration = Duration::from_millis(REDISCOVERY_S * 1000 + TIMEOUT_MS);

/// How an answer was judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Expected,
    /// 503 while the IdP was down or faulty (or within its grace after).
    Tolerated503,
    /// 401 (bearer) or 503 (client credentials) for a token signed with a key activated
    /// within the new-key window.
    ToleratedNewKey,
    Unexpected,
    /// A 200 for an invalid credential.
    WrongAllow,
}

/// The tolerance rules of the report, in code.
///
/// - An invalid credential answered 200 is a hard failure, always.
/// - The expected status ([`Kind::expected`]) is fine, always.
/// - 503 is tolerated for a request that may need the IdP if it was in flight during an
///   outage or fault window, or within that window's length plus one callout timeout after
///   it (the filter's backoff doubles from 1 s).
/// - [`Kind::new_key_status`] is tolerated for a request involving a token signed with a key
///   that started signing less than `rediscovery_lifetime` plus one timeout before the request
///   ended; a disturbance overlapping that window extends it past the disturbance's grace.
/// - Anything else (other statuses, no answer) is unexpected.
pub fn judge(
    chaos: &ChaosState,
    kind: Kind,
    status: Option<u16>,
    kid: Option<&str>,
    sent: Instant,
    done: Instant,
) -> Verdict {
    let Some(status) = status else {
        return Verdict::Unexpected;
    };
    if status == 200 && !kind.valid() {
        return Verdict::WrongAllow;
    }
    if status == kind.expected() {
        return Verdict::Expected;
    }
    let overlaps = |from: Instant, to: Instant| sent <= to && done >= from;
    let disturbance_end = |to: Option<Instant>, grace: Duration| match to {
        Some(to) => to + grace,
        None => done + Duration::from_secs(3600),
    };
    if status == 503
        && kind.may_need_idp()
        && chaos
            .disturbances
            .iter()
            .any(|&(from, to, grace)| overlaps(from, disturbance_end(to, grace)))
    {
        return Verdict::Tolerated503;
    }
    if kind.new_key_status() == Some(status) {
        let fresh_key = chaos.activations.iter().any(|&(activated, at)| {
            if kid.is_some_and(|k| k != activated) {
                return false;
            }
            let mut end = at + NEW_KEY_WINDOW;
            for &(from, to, grace) in &chaos.disturbances {
                let until = disturbance_end(to, grace);
                if from <= end && until >= at {
                    end = end.max(until + NEW_KEY_WINDOW);
                }
            }
            overlaps(at, end)
        });
        if fresh_key {
            return Verdict::ToleratedNewKey;
        }
    }
    Verdict::Unexpected
}

/// Whether a denial carries what the contract says it must: `WWW-Authenticate: Bearer` on 401
/// and 403, `Retry-After` on 503. Other statuses have nothing to check.
pub fn denial_well_formed(status: u16, headers: &reqwest::header::HeaderMap) -> bool {
    let has = |name: &str, prefix: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(prefix))
    };
    match status {
        401 | 403 => has("www-authenticate", "Bearer realm="),
        503 => has("retry-after", ""),
        _ => true,
    }
}

/// Whether the echo upstream's account of what it received (`body`) shows the caller's client
/// secret: in clear anywhere, or because the `Authorization` it got is not the filter's
/// `Bearer` (the caller's `Basic` carries the secret in base64).
pub fn leaked(body: &[u8], secret: &str) -> bool {
    if body.windows(secret.len()).any(|w| w == secret.as_bytes()) {
        return true;
    }
    let echoed: Value = serde_json::from_slice(body).unwrap_or_default();
    !echoed["headers"]["authorization"]
        .as_str()
        .is_some_and(|a| a.starts_with("Bearer "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_secret_upstream_is_seen_in_clear_or_behind_basic() {
        let bearer = br#"{"headers":{"authorization":"Bearer abc"}}"#;
        let basic = br#"{"headers":{"authorization":"Basic c29hay1hOnMzY3JldA=="}}"#;
        assert!(!leaked(bearer, "s3cret"));
        assert!(leaked(basic, "s3cret"));
        assert!(leaked(br#"{"headers":{"x":"s3cret"}}"#, "s3cret"));
    }

    #[test]
    fn judging() {
        let start = Instant::now();
        let chaos = ChaosState {
            disturbances: vec![(at(start, 20), Some(at(start, 25)), Duration::from_secs(7))],
            activations: vec![("ec-1", at(start, 60))],
            ..ChaosState::default()
        };
        let judge_at = |kind, status, kid, secs| {
            judge(
                &chaos,
                kind,
                Some(status),
                kid,
                at(start, secs),
                at(start, secs),
            )
        };
        assert_eq!(
            judge_at(Kind::CcWrongSecret, 200, None, 22),
            Verdict::WrongAllow
        );
        assert_eq!(judge_at(Kind::CcValid, 200, None, 22), Verdict::Expected);
        assert_eq!(
            judge_at(Kind::CcValid, 503, None, 31),
            Verdict::Tolerated503
        );
        assert_eq!(judge_at(Kind::CcValid, 503, None, 33), Verdict::Unexpected);
        assert_eq!(
            judge_at(Kind::NoCredential, 503, None, 22),
            Verdict::Unexpected
        );
        // A new key: 401 for a bearer token with that kid, 503 for client credentials.
        assert_eq!(
            judge_at(Kind::BearerValid, 401, Some("ec-1"), 63),
            Verdict::ToleratedNewKey
        );
        assert_eq!(
            judge_at(Kind::BearerValid, 401, Some("rsa-1"), 63),
            Verdict::Unexpected
        );
        assert_eq!(
            judge_at(Kind::CcValid, 503, None, 63),
            Verdict::ToleratedNewKey
        );
        assert_eq!(judge_at(Kind::CcValid, 401, None, 63), Verdict::Unexpected);
        assert_eq!(
            judge_at(Kind::BearerValid, 401, Some("ec-1"), 68),
            Verdict::Unexpected
        );
    }
}
