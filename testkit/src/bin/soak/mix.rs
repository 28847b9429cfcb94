//! What the request loops send: the request kinds, the status each deserves, their weights in
//! the mix, and the seeded generator that draws them.

use crate::Error;

/// What a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    CcValid,
    CcNew,
    CcWrongSecret,
    CcNewWrongSecret,
    BearerValid,
    BearerNoScope,
    BearerTampered,
    BearerExpired,
    BearerWrongAudience,
    BearerUnknownKid,
    BearerAlgNone,
    NoCredential,
}

impl Kind {
    /// Each kind with its default weight in the mix (they add up to 100).
    pub const MIX: Mix = [
        (Kind::CcValid, 30),
        (Kind::CcNew, 3),
        (Kind::CcWrongSecret, 5),
        (Kind::CcNewWrongSecret, 2),
        (Kind::BearerValid, 30),
        (Kind::BearerNoScope, 4),
        (Kind::BearerTampered, 5),
        (Kind::BearerExpired, 5),
        (Kind::BearerWrongAudience, 4),
        (Kind::BearerUnknownKid, 2),
        (Kind::BearerAlgNone, 2),
        (Kind::NoCredential, 8),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::CcValid => "client credentials, registered client",
            Kind::CcNew => "client credentials, client registered during the run",
            Kind::CcWrongSecret => "client credentials, wrong secret (the same one)",
            Kind::CcNewWrongSecret => "client credentials, a new wrong secret each time",
            Kind::BearerValid => "bearer, valid (fresh every 20 requests)",
            Kind::BearerNoScope => "bearer, valid but without the required scope",
            Kind::BearerTampered => "bearer, payload changed after signing",
            Kind::BearerExpired => "bearer, expired",
            Kind::BearerWrongAudience => "bearer, wrong audience",
            Kind::BearerUnknownKid => "bearer, unknown kid",
            Kind::BearerAlgNone => "bearer, alg none",
            Kind::NoCredential => "no credential",
        }
    }

    /// The status this request deserves when the IdP behaves.
    pub fn expected(self) -> u16 {
        match self {
            Kind::CcValid | Kind::CcNew | Kind::BearerValid => 200,
            // Claim rules are 403, a wrong audience too (as Kong and jwt_authn answer it).
            Kind::BearerNoScope | Kind::BearerWrongAudience => 403,
            _ => 401,
        }
    }

    /// Whether the credential is good: a 200 for anything else is a hard failure.
    pub fn valid(self) -> bool {
        self.expected() == 200
    }

    /// Whether answering it may need the IdP (a token fetch or a key-set refetch), so 503
    /// is tolerated while the IdP is disturbed.
    pub fn may_need_idp(self) -> bool {
        self != Kind::NoCredential
    }

    /// The status tolerated right after a rotation, for kinds whose token is signed with the
    /// key that just started signing, before the filter could fetch it: 503 for client
    /// credentials (the IdP issued the token; not the client's fault), 401 for a bearer token
    /// (an unknown `kid` is `invalid_token`).
    pub fn new_key_status(self) -> Option<u16> {
        match self {
            Kind::CcValid | Kind::CcNew => Some(503),
            Kind::BearerValid | Kind::BearerNoScope => Some(401),
            _ => None,
        }
    }

    pub fn path(self) -> String {
        format!("/soak/{self:?}")
    }
}

/// Request kinds with their weights.
pub type Mix = [(Kind, u64); 12];

/// The default mix with the weights of SOAK_WEIGHTS (`Kind=weight,…`, e.g.
/// `BearerUnknownKid=0`) put over it.
pub fn mix_from_env() -> Result<Mix, Error> {
    let mut mix = Kind::MIX;
    let spec = std::env::var("SOAK_WEIGHTS").unwrap_or_default();
    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let parsed = item
            .split_once('=')
            .and_then(|(name, w)| Some((name.trim(), w.trim().parse::<u64>().ok()?)));
        let slot = parsed.and_then(|(name, w)| {
            let slot = mix.iter_mut().find(|(k, _)| format!("{k:?}") == name)?;
            Some((slot, w))
        });
        let Some((slot, weight)) = slot else {
            let names: Vec<String> = Kind::MIX.iter().map(|(k, _)| format!("{k:?}")).collect();
            return Err(format!(
                "SOAK_WEIGHTS: {item:?} is not Kind=weight; kinds: {}",
                names.join(" ")
            )
            .into());
        };
        slot.1 = weight;
    }
    if mix.iter().all(|(_, w)| *w == 0) {
        return Err("SOAK_WEIGHTS leaves no request kind".into());
    }
    Ok(mix)
}

/// SplitMix64: a tiny seeded generator, so each loop's sequence of kinds is reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn kind(&mut self, mix: &Mix) -> Kind {
        let total: u64 = mix.iter().map(|(_, w)| w).sum();
        let mut pick = self.below(total.max(1));
        for &(kind, weight) in mix {
            if pick < weight {
                return kind;
            }
            pick -= weight;
        }
        Kind::NoCredential
    }
}
