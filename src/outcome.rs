//! Every way a request is refused, mapped in one place to what the caller sees (the outcome table of the README).

use std::fmt;
use std::rc::Rc;

/// Headers to write upstream, shared between the cache and the requests it answers.
pub type Headers = Rc<[(String, String)]>;

/// An allowed request: the headers it goes upstream with, and who it is (for access logs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// Set after the strip list was removed.
    pub headers: Headers,
    /// The token's client (`client_id`, `cid`, `azp` or `sub`); none on a public route.
    pub client: Option<Rc<str>>,
    /// The names of the strip list that `headers` does not set, worked out when the grant
    /// was made: it is cached and applied to every request with its token, and comparing
    /// the lists without case each time cost a cached request ~800 instructions. `None`:
    /// worked out when applied ([`crate::upstream::edits`]).
    pub removes: Option<Rc<[String]>>,
}

/// What becomes of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Grant),
    Deny(Denial),
}

/// Why a token was found invalid. Logged as a reason code; the caller only learns
/// `invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    TooLarge,
    Malformed,
    DisallowedAlgorithm,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    MissingExpiry,
    WrongIssuer,
    ClientNotAllowed,
    /// The introspection endpoint calls it inactive (or unknown).
    Inactive,
}

impl TokenProblem {
    /// Every problem, for reports and tooling that list them.
    pub const ALL: [TokenProblem; 12] = [
        TokenProblem::TooLarge,
        TokenProblem::Malformed,
        TokenProblem::DisallowedAlgorithm,
        TokenProblem::UnknownKey,
        TokenProblem::BadSignature,
        TokenProblem::Expired,
        TokenProblem::NotYetValid,
        TokenProblem::IssuedInFuture,
        TokenProblem::MissingExpiry,
        TokenProblem::WrongIssuer,
        TokenProblem::ClientNotAllowed,
        TokenProblem::Inactive,
    ];

    /// The counter of its denials.
    pub fn counter(self) -> &'static str {
        match self {
            TokenProblem::TooLarge => "oidcgate.denied.invalid_token.token_too_large",
            TokenProblem::Malformed => "oidcgate.denied.invalid_token.malformed",
            TokenProblem::DisallowedAlgorithm => "oidcgate.denied.invalid_token.disallowed_alg",
            TokenProblem::UnknownKey => "oidcgate.denied.invalid_token.unknown_kid",
            TokenProblem::BadSignature => "oidcgate.denied.invalid_token.bad_signature",
            TokenProblem::Expired => "oidcgate.denied.invalid_token.expired",
            TokenProblem::NotYetValid => "oidcgate.denied.invalid_token.not_yet_valid",
            TokenProblem::IssuedInFuture => "oidcgate.denied.invalid_token.iat_in_future",
            TokenProblem::MissingExpiry => "oidcgate.denied.invalid_token.missing_exp",
            TokenProblem::WrongIssuer => "oidcgate.denied.invalid_token.wrong_issuer",
            TokenProblem::ClientNotAllowed => "oidcgate.denied.invalid_token.client_not_allowed",
            TokenProblem::Inactive => "oidcgate.denied.invalid_token.inactive",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            TokenProblem::TooLarge => "token_too_large",
            TokenProblem::Malformed => "malformed",
            TokenProblem::DisallowedAlgorithm => "disallowed_alg",
            TokenProblem::UnknownKey => "unknown_kid",
            TokenProblem::BadSignature => "bad_signature",
            TokenProblem::Expired => "expired",
            TokenProblem::NotYetValid => "not_yet_valid",
            TokenProblem::IssuedInFuture => "iat_in_future",
            TokenProblem::MissingExpiry => "missing_exp",
            TokenProblem::WrongIssuer => "wrong_issuer",
            TokenProblem::ClientNotAllowed => "client_not_allowed",
            TokenProblem::Inactive => "inactive",
        }
    }

    fn description(self) -> &'static str {
        match self {
            TokenProblem::TooLarge => "token is too large",
            TokenProblem::Malformed => "token is malformed",
            TokenProblem::DisallowedAlgorithm => "token algorithm is not allowed",
            TokenProblem::UnknownKey => "token signing key is unknown",
            TokenProblem::BadSignature => "token signature is invalid",
            TokenProblem::Expired => "token has expired",
            TokenProblem::NotYetValid => "token is not valid yet",
            TokenProblem::IssuedInFuture => "token is issued in the future",
            TokenProblem::MissingExpiry => "token has no expiry",
            TokenProblem::WrongIssuer => "token issuer is not allowed",
            TokenProblem::ClientNotAllowed => "client is not allowed",
            TokenProblem::Inactive => "token is not active",
        }
    }
}

/// The claim rule a valid token failed. Each is answered 403 `insufficient_scope`, as Kong
/// answers them all; the log line and the counter name the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRule {
    Audience,
    Scopes,
    Groups,
    Roles,
    ForbiddenClaim,
}

impl ClaimRule {
    pub const ALL: [ClaimRule; 5] = [
        ClaimRule::Audience,
        ClaimRule::Scopes,
        ClaimRule::Groups,
        ClaimRule::Roles,
        ClaimRule::ForbiddenClaim,
    ];

    /// The configuration key of the rule.
    pub fn key(self) -> &'static str {
        match self {
            ClaimRule::Audience => "audience_required",
            ClaimRule::Scopes => "scopes_required",
            ClaimRule::Groups => "groups_required",
            ClaimRule::Roles => "roles_required",
            ClaimRule::ForbiddenClaim => "claims_forbidden",
        }
    }

    /// The counter of its denials.
    pub fn counter(self) -> &'static str {
        match self {
            ClaimRule::Audience => "oidcgate.denied.insufficient_scope.audience",
            ClaimRule::Scopes => "oidcgate.denied.insufficient_scope.scopes",
            ClaimRule::Groups => "oidcgate.denied.insufficient_scope.groups",
            ClaimRule::Roles => "oidcgate.denied.insufficient_scope.roles",
            ClaimRule::ForbiddenClaim => "oidcgate.denied.insufficient_scope.claims_forbidden",
        }
    }

    fn description(self) -> &'static str {
        match self {
            ClaimRule::Audience => "token audience is not allowed",
            ClaimRule::Scopes => "token lacks a required scope",
            ClaimRule::Groups => "token lacks a required group",
            ClaimRule::Roles => "token lacks a required role",
            ClaimRule::ForbiddenClaim => "token carries a forbidden claim",
        }
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No credential of an accepted kind.
    Missing,
    InvalidToken(TokenProblem),
    /// The IdP refused the caller's client id and secret, or they were unreadable.
    InvalidClient,
    /// A valid token that fails a claim rule.
    InsufficientScope(ClaimRule),
    /// No usable token or key set, and the IdP cannot be asked right now.
    IdpUnavailable {
        retry_after_s: u64,
    },
    /// The route names a policy the configuration does not have: never a weaker one.
    UnknownPolicy,
    /// The request carries a header the filter sets, in a host that cannot remove it
    /// (ngx_wasm_module forwards "removed" headers): refused rather than passed on.
    HeaderNotRemovable,
}

impl Denial {
    pub fn status(&self) -> u32 {
        match self {
            Denial::Missing | Denial::InvalidToken(_) | Denial::InvalidClient => 401,
            Denial::InsufficientScope(_) => 403,
            Denial::IdpUnavailable { .. } => 503,
            Denial::UnknownPolicy => 500,
            Denial::HeaderNotRemovable => 400,
        }
    }

    /// Stable reason code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::Missing => "missing",
            Denial::InvalidToken(_) => "invalid_token",
            Denial::InvalidClient => "invalid_client",
            Denial::InsufficientScope(_) => "insufficient_scope",
            Denial::IdpUnavailable { .. } => "idp_unavailable",
            Denial::UnknownPolicy => "unknown_policy",
            Denial::HeaderNotRemovable => "header_not_removable",
        }
    }

    fn error_code(&self) -> &'static str {
        match self {
            Denial::Missing => "unauthorized",
            Denial::IdpUnavailable { .. } => "temporarily_unavailable",
            Denial::UnknownPolicy => "server_error",
            Denial::HeaderNotRemovable => "invalid_request",
            other => other.reason(),
        }
    }

    fn description(&self) -> &'static str {
        match self {
            Denial::Missing => "credentials are required",
            Denial::InvalidToken(p) => p.description(),
            Denial::InvalidClient => "client authentication failed",
            Denial::InsufficientScope(rule) => rule.description(),
            Denial::IdpUnavailable { .. } => "identity provider is unavailable, retry later",
            Denial::UnknownPolicy => "the route names a policy that is not configured",
            Denial::HeaderNotRemovable => "the request carries a header the gateway sets",
        }
    }

    /// Response headers besides the content type: `WWW-Authenticate` (RFC 6750 §3) or
    /// `Retry-After`.
    pub fn headers(&self, realm: &str) -> Vec<(&'static str, String)> {
        match self {
            Denial::Missing => vec![("www-authenticate", format!("Bearer realm=\"{realm}\""))],
            Denial::IdpUnavailable { retry_after_s } => {
                vec![("retry-after", retry_after_s.max(&1).to_string())]
            }
            Denial::UnknownPolicy | Denial::HeaderNotRemovable => Vec::new(),
            other => vec![(
                "www-authenticate",
                format!("Bearer realm=\"{realm}\", error=\"{}\"", other.error_code()),
            )],
        }
    }

    /// The small JSON body. Descriptions are fixed strings: nothing from the request or the
    /// IdP is echoed back.
    pub fn body(&self) -> String {
        format!(
            "{{\"error\":\"{}\",\"error_description\":\"{}\"}}",
            self.error_code(),
            self.description()
        )
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::InvalidToken(p) => write!(f, "invalid_token ({})", p.code()),
            Denial::InsufficientScope(rule) => write!(f, "insufficient_scope ({})", rule.key()),
            other => f.write_str(other.reason()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_listed_once_with_its_own_code() {
        let codes: std::collections::BTreeSet<&str> =
            TokenProblem::ALL.iter().map(|p| p.code()).collect();
        assert_eq!(codes.len(), TokenProblem::ALL.len());
        for p in TokenProblem::ALL {
            assert_eq!(
                p.counter(),
                format!("oidcgate.denied.invalid_token.{}", p.code())
            );
            assert!(crate::tally::COUNTERS.contains(&p.counter()), "{p:?}");
        }
        for rule in ClaimRule::ALL {
            assert!(crate::tally::COUNTERS.contains(&rule.counter()), "{rule:?}");
        }
        // A new variant must be added to ALL: this match stops compiling otherwise.
        for p in TokenProblem::ALL {
            match p {
                TokenProblem::TooLarge
                | TokenProblem::Malformed
                | TokenProblem::DisallowedAlgorithm
                | TokenProblem::UnknownKey
                | TokenProblem::BadSignature
                | TokenProblem::Expired
                | TokenProblem::NotYetValid
                | TokenProblem::IssuedInFuture
                | TokenProblem::MissingExpiry
                | TokenProblem::WrongIssuer
                | TokenProblem::ClientNotAllowed
                | TokenProblem::Inactive => {}
            }
        }
    }

    #[test]
    fn outcome_table() {
        let realm = "idp.example.com";
        let cases = [
            (Denial::Missing, 401, "Bearer realm=\"idp.example.com\""),
            (
                Denial::InvalidToken(TokenProblem::Expired),
                401,
                "Bearer realm=\"idp.example.com\", error=\"invalid_token\"",
            ),
            (
                Denial::InvalidClient,
                401,
                "Bearer realm=\"idp.example.com\", error=\"invalid_client\"",
            ),
            (
                Denial::InsufficientScope(ClaimRule::Audience),
                403,
                "Bearer realm=\"idp.example.com\", error=\"insufficient_scope\"",
            ),
        ];
        for (denial, status, www) in cases {
            assert_eq!(denial.status(), status);
            assert_eq!(
                denial.headers(realm),
                vec![("www-authenticate", www.to_string())]
            );
            let body: serde_json::Value = serde_json::from_str(&denial.body()).unwrap();
            assert!(body["error"].is_string() && body["error_description"].is_string());
        }
        let unavailable = Denial::IdpUnavailable { retry_after_s: 0 };
        assert_eq!(unavailable.status(), 503);
        assert_eq!(
            unavailable.headers(realm),
            vec![("retry-after", "1".to_string())]
        );
        assert!(unavailable.body().contains("temporarily_unavailable"));
    }
}
