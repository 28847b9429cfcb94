//! Coordinating what the filter fetches from the IdP across every worker: one fetch at a
//! time per resource (a compare-and-swap claim on its shared record), backoff after
//! failures, and the URL each resource is fetched from.

use crate::cache::Key;
use crate::config::IdpSettings;
use crate::credentials::ClientCredentials;
use crate::idp::{self, Callout, Endpoints};
use crate::outcome::{Denial, Verdict};
use crate::records::{AnswerValue, Bucket, Layout};
use crate::store::{Claim, FetchState, Fetched, SharedStore};
use crate::url::HttpUrl;

/// How long others wait for a fetcher beyond the callout timeout before taking over.
const LOCK_GRACE_MS: u64 = 1_000;

/// Something the filter fetches from the IdP.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    Discovery,
    Jwks,
    /// The token for one `(client id, secret, scopes)`, by its hash.
    Token(Key),
    /// The introspection answer for one token, by its hash.
    Introspection(Key),
}

/// What a fetch asks for and as whom: what its callout is built from.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// A document every caller shares (discovery, the key set).
    Document,
    /// A token for these client credentials.
    Token(&'a ClientCredentials),
    /// Whether `token` is active, asked as `client`.
    Introspect {
        token: &'a str,
        client: &'a ClientCredentials,
    },
}

impl Resource {
    pub fn name(&self) -> &'static str {
        match self {
            Resource::Discovery => "discovery",
            Resource::Jwks => "jwks",
            Resource::Token(_) => "token",
            Resource::Introspection(_) => "introspection",
        }
    }
}

/// A callout the host must send; its answer goes back to the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub resource: Resource,
    pub callout: Callout,
}

/// One look at a request: when it arrived, and whether it was looked at before. A parked
/// request is looked at again whenever what it waits for lands, often within the
/// millisecond it arrived in, so the clock cannot tell a first look from a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    pub started_ms: u64,
    pub again: bool,
}

impl Look {
    pub fn first(now_ms: u64) -> Look {
        Look {
            started_ms: now_ms,
            again: false,
        }
    }

    pub fn again(started_ms: u64) -> Look {
        Look {
            started_ms,
            again: true,
        }
    }
}

/// What to do with a request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Done(Verdict),
    /// Park it: another worker is fetching what it needs. Ask again later.
    Wait(Resource),
    /// Park it and send this callout; ask again once it is answered.
    Fetch(Fetch),
}

impl Step {
    pub fn deny(denial: Denial) -> Step {
        Step::Done(Verdict::Deny(denial))
    }

    pub fn unavailable() -> Step {
        Step::deny(Denial::IdpUnavailable { retry_after_s: 1 })
    }
}

/// What an IdP answer did, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Stored,
    /// The token endpoint refused the client (RFC 6749 error code).
    Rejected(String),
    /// The introspection endpoint called the token inactive.
    Inactive,
    Failed(String),
}

pub struct Fetcher {
    layout: Layout,
    lock_ms: u64,
    /// This VM's copy of what discovery found.
    endpoints: Option<Endpoints>,
    /// The endpoint a refused fetch needed and discovery did not name, for its log line.
    missing: Option<&'static str>,
}

impl Fetcher {
    pub fn new(layout: Layout, idp: &IdpSettings) -> Fetcher {
        Fetcher {
            layout,
            lock_ms: idp.timeout_ms + LOCK_GRACE_MS,
            endpoints: None,
            missing: None,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn layout_mut(&mut self) -> &mut Layout {
        &mut self.layout
    }

    /// The fetch state of `resource`, as every worker sees it.
    pub fn state(&self, store: &dyn SharedStore, resource: &Resource) -> FetchState {
        match resource {
            Resource::Token(k) => self.layout.token_entry(store, k).state,
            Resource::Introspection(k) => self.layout.answer_entry(store, k).state,
            _ => {
                self.layout
                    .read::<Fetched<Box<serde_json::value::RawValue>>>(store, &self.key(resource))
                    .state
            }
        }
    }

    /// Runs `f` on the fetch state of `resource`, wherever its record keeps it.
    pub fn update_state<R>(
        &self,
        store: &mut dyn SharedStore,
        resource: &Resource,
        now_ms: u64,
        mut f: impl FnMut(&mut FetchState) -> R,
    ) -> Option<R> {
        match resource {
            Resource::Token(k) => {
                self.layout
                    .update(store, &self.layout.bucket(k), |b: &mut Bucket| {
                        b.with_entry(k, now_ms, |e| f(&mut e.state))
                    })
            }
            Resource::Introspection(k) => self.layout.update(
                store,
                &self.layout.answer_bucket(k),
                |b: &mut Bucket<AnswerValue>| b.with_entry(k, now_ms, |e| f(&mut e.state)),
            ),
            _ => self
                .layout
                .update_document_state(store, &self.key(resource), f),
        }
    }

    fn key(&self, resource: &Resource) -> String {
        match resource {
            Resource::Discovery => self.layout.discovery(),
            Resource::Jwks => self.layout.jwks(),
            Resource::Token(k) => self.layout.bucket(k),
            Resource::Introspection(k) => self.layout.answer_bucket(k),
        }
    }

    pub fn is_busy(&self, store: &dyn SharedStore, resource: &Resource, now_ms: u64) -> bool {
        self.state(store, resource).is_busy(now_ms)
    }

    pub fn fail(&self, store: &mut dyn SharedStore, resource: &Resource, now_ms: u64) {
        self.update_state(store, resource, now_ms, |s| s.fail(now_ms));
    }

    /// The fetch of `resource` will not be answered: let the next one in without waiting
    /// for the lock to lapse.
    pub fn release(&self, store: &mut dyn SharedStore, resource: &Resource, now_ms: u64) {
        self.update_state(store, resource, now_ms, |s| s.release());
    }

    /// Claims the fetch of `resource`, or of discovery first when its URL is not known
    /// yet. `ask` is what the callout carries.
    pub fn step(
        &mut self,
        store: &mut dyn SharedStore,
        idp: &IdpSettings,
        resource: Resource,
        ask: Ask<'_>,
        now_ms: u64,
    ) -> Step {
        let Some(url) = self.url_for(store, idp, &resource) else {
            if resource == Resource::Discovery {
                return Step::unavailable();
            }
            if self.endpoints.is_some() {
                // Discovery answered without this endpoint: asking it again will not help.
                self.missing = Some(match resource {
                    Resource::Introspection(_) => "introspection_endpoint",
                    _ => "token_endpoint",
                });
                return Step::deny(Denial::IdpUnavailable { retry_after_s: 60 });
            }
            return self.step(store, idp, Resource::Discovery, Ask::Document, now_ms);
        };
        let lock = self.lock_ms;
        match self.update_state(store, &resource, now_ms, |s| s.claim(now_ms, lock)) {
            Some(Claim::Acquired) => {
                let callout = match (&resource, ask) {
                    (Resource::Token(_), Ask::Token(c)) => Callout::token(idp, &url, c),
                    (Resource::Introspection(_), Ask::Introspect { token, client }) => {
                        Callout::introspect(idp, &url, token, client)
                    }
                    (Resource::Discovery | Resource::Jwks, Ask::Document) => {
                        Callout::get(idp, &url)
                    }
                    // A fetch asked for without what its callout needs: a bug, not a
                    // request to send; let the next one in.
                    _ => {
                        self.release(store, &resource, now_ms);
                        return Step::unavailable();
                    }
                };
                Step::Fetch(Fetch { resource, callout })
            }
            Some(Claim::Busy) => Step::Wait(resource),
            Some(Claim::BackingOff { retry_at_ms }) => Step::deny(Denial::IdpUnavailable {
                retry_after_s: retry_at_ms.saturating_sub(now_ms).div_ceil(1000),
            }),
            None => Step::unavailable(),
        }
    }

    /// An unknown `kid`: claims a key-set refetch unless one completed within `gap_ms`
    /// (of any cause, by any worker). `None` means no refetch is allowed now.
    pub fn rediscover(
        &mut self,
        store: &mut dyn SharedStore,
        idp: &IdpSettings,
        gap_ms: u64,
        now_ms: u64,
    ) -> Option<Step> {
        let url = self.url_for(store, idp, &Resource::Jwks)?;
        let lock = self.lock_ms;
        let claim = self
            .update_state(store, &Resource::Jwks, now_ms, |s| {
                if s.is_busy(now_ms) {
                    Some(Claim::Busy)
                } else if now_ms.saturating_sub(s.completed_ms) < gap_ms {
                    None
                } else {
                    Some(s.claim(now_ms, lock))
                }
            })
            .flatten()?;
        match claim {
            Claim::Acquired => Some(Step::Fetch(Fetch {
                resource: Resource::Jwks,
                callout: Callout::get(idp, &url),
            })),
            Claim::Busy => Some(Step::Wait(Resource::Jwks)),
            Claim::BackingOff { .. } => None,
        }
    }

    /// The endpoint discovery did not name that the last refused fetch needed.
    pub fn take_missing(&mut self) -> Option<&'static str> {
        self.missing.take()
    }

    fn url_for(
        &mut self,
        store: &dyn SharedStore,
        idp: &IdpSettings,
        resource: &Resource,
    ) -> Option<HttpUrl> {
        let configured = match resource {
            Resource::Discovery => return Some(idp.discovery_url.clone()),
            Resource::Jwks => &idp.jwks_uri,
            Resource::Token(_) => &idp.token_endpoint,
            Resource::Introspection(_) => &idp.introspection_endpoint,
        };
        if let Some(url) = configured {
            return Some(url.clone());
        }
        if self.endpoints.is_none() {
            let record: Fetched<Endpoints> = self.layout.read(store, &self.layout.discovery());
            self.endpoints = record.value;
        }
        let endpoints = self.endpoints.as_ref()?;
        let raw = match resource {
            Resource::Jwks => Some(endpoints.jwks_uri.as_str()),
            Resource::Introspection(_) => endpoints.introspection_endpoint.as_deref(),
            _ => endpoints.token_endpoint.as_deref(),
        }?;
        HttpUrl::parse(raw).ok()
    }

    /// Applies the answer to a discovery fetch.
    pub fn on_discovery(
        &mut self,
        store: &mut dyn SharedStore,
        idp: &IdpSettings,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
    ) -> Applied {
        match idp::parse_discovery(&idp.issuer, status, body) {
            Ok(endpoints) => {
                self.layout.update(
                    store,
                    &self.layout.discovery(),
                    |r: &mut Fetched<Endpoints>| r.succeed(endpoints.clone(), now_ms),
                );
                self.endpoints = Some(endpoints);
                Applied::Stored
            }
            Err(why) => {
                self.fail(store, &Resource::Discovery, now_ms);
                Applied::Failed(why)
            }
        }
    }
}
