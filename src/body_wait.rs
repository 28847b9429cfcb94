//! Requests whose credential can only be in their body, waiting for it with their headers
//! held back. Envoy delivers the body of a request paused on its headers only when the Wasm
//! `PluginConfig` sets `allow_on_headers_stop_iteration: true` (Envoy ≥ 1.35); otherwise it
//! holds the body until the filter resumes, which would send the headers upstream
//! undecided. Nothing tells the filter which it is, so a VM learns it: a body reaching a
//! request paused on its headers shows it is delivered; a wait that ends with no body at all
//! shows it is withheld, and from then on such requests are refused at once (401) instead of
//! each waiting out its deadline.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Unknown,
    Delivered,
    Withheld,
}

#[derive(Debug)]
pub struct BodyWait {
    delivery: Delivery,
    /// Context → deadline; the body has not started arriving.
    waiting: BTreeMap<u32, u64>,
}

/// How a wait ended at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing of the body arrived, and no body ever reached a paused request here: the
    /// host withholds bodies (learned now).
    Withheld,
    /// The caller was slow: bodies do reach paused requests here.
    Slow,
}

impl BodyWait {
    pub fn new() -> BodyWait {
        BodyWait {
            delivery: Delivery::Unknown,
            waiting: BTreeMap::new(),
        }
    }

    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// `context` holds its headers until its body arrives or `deadline_ms`. False when the
    /// host is known to withhold bodies: waiting would only delay the refusal.
    pub fn start(&mut self, context: u32, deadline_ms: u64) -> bool {
        if self.delivery == Delivery::Withheld {
            return false;
        }
        self.waiting.insert(context, deadline_ms);
        true
    }

    /// The host is known to withhold bodies: no request waits for one from now on.
    pub fn withheld(&mut self) {
        self.delivery = Delivery::Withheld;
    }

    /// Body bytes reached `context` while its headers were held.
    pub fn arrived(&mut self, context: u32) {
        self.waiting.remove(&context);
        self.delivery = Delivery::Delivered;
    }

    pub fn forget(&mut self, context: u32) {
        self.waiting.remove(&context);
    }

    pub fn is_waiting(&self, context: u32) -> bool {
        self.waiting.contains_key(&context)
    }

    /// The waits past their deadline, removed, and what each says of the host.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(u32, Expired)> {
        let due: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, deadline)| now_ms >= **deadline)
            .map(|(context, _)| *context)
            .collect();
        due.into_iter()
            .map(|context| {
                self.waiting.remove(&context);
                let how = match self.delivery {
                    Delivery::Delivered => Expired::Slow,
                    Delivery::Unknown | Delivery::Withheld => {
                        self.delivery = Delivery::Withheld;
                        Expired::Withheld
                    }
                };
                (context, how)
            })
            .collect()
    }
}

impl Default for BodyWait {
    fn default() -> Self {
        BodyWait::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_that_never_delivers_is_learned_from_one_wait_and_then_refused_at_once() {
        let mut w = BodyWait::new();
        assert!(w.start(1, 100));
        assert!(w.start(2, 150));
        assert_eq!(w.expire(99), vec![]);
        assert_eq!(w.expire(100), vec![(1, Expired::Withheld)]);
        assert_eq!(w.delivery(), Delivery::Withheld);
        assert!(
            !w.start(3, 500),
            "no more waiting once bodies are known withheld"
        );
        assert_eq!(w.expire(150), vec![(2, Expired::Withheld)]);
    }

    #[test]
    fn once_a_body_arrived_a_late_one_is_a_slow_caller() {
        let mut w = BodyWait::new();
        w.start(1, 100);
        w.start(2, 100);
        w.arrived(1);
        assert!(!w.is_waiting(1));
        assert_eq!(w.expire(100), vec![(2, Expired::Slow)]);
        assert_eq!(w.delivery(), Delivery::Delivered);
        assert!(w.start(3, 200));
        w.forget(3);
        assert_eq!(w.expire(300), vec![]);
    }
}
