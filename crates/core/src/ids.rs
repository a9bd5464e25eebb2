//! Typed identifiers. Each is a prefix and a ULID (`tok_01JD…`), so ids sort by creation
//! time, which is what "newest first" pagination orders by.

use crate::clock::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::{Arc, Mutex};

/// Monotonic ULIDs: two ids made in the same millisecond still sort in creation order.
static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);

fn next_ulid(now: Timestamp) -> String {
    let time = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(now.timestamp_millis()).unwrap_or(0));
    let mut guard = match GENERATOR.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    let id = generator
        .generate_from_datetime(time)
        .unwrap_or_else(|_| ulid::Ulid::from_datetime(time));
    id.to_string()
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        /// Shared text: an id is cloned into every access record and cache entry, and a
        /// clone is a count, not an allocation.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id whose time part is `now`.
            pub fn generate(now: Timestamp) -> Self {
                Self(format!("{}{}", $prefix, next_ulid(now)).into())
            }

            /// Accepts only the shape this id has (prefix + 26 ULID characters).
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                (rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .then(|| Self(s.into()))
            }

            /// Wraps a value read back from storage, which only ever holds valid ids.
            pub fn from_trusted(s: String) -> Self {
                Self(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A token's id; stable across rename and regenerate.
    TokenId,
    "tok_"
);
prefixed_id!(
    /// An account's id.
    AccountId,
    "acc_"
);

prefixed_id!(
    /// A gateway upstream service's id.
    ServiceId,
    "svc_"
);
prefixed_id!(
    /// A gateway route's id.
    RouteId,
    "rte_"
);

prefixed_id!(
    /// A webhook subscription's id.
    WebhookId,
    "whk_"
);

prefixed_id!(
    /// A webhook event's id (events noticed more than once have ids of their own
    /// making, see [`crate::webhook::EventDraft::id`]).
    EventId,
    "evt_"
);
prefixed_id!(
    /// A webhook delivery's id: the message's `webhook-id`.
    DeliveryId,
    "msg_"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, SystemClock};

    #[test]
    fn ids_sort_in_creation_order_within_a_millisecond() {
        let now = SystemClock.now();
        let ids: Vec<TokenId> = (0..100).map(|_| TokenId::generate(now)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn parse_checks_prefix_and_length() {
        let id = AccountId::generate(SystemClock.now());
        assert_eq!(AccountId::parse(id.as_str()), Some(id.clone()));
        assert!(TokenId::parse(id.as_str()).is_none());
        assert!(TokenId::parse("tok_short").is_none());
    }
}
