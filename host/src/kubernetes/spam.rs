//! The Event spam filter: a storm of one Event (same object, same reason) is cut down before it
//! is queued, as client-go's `EventSourceObjectSpamFilter` does (`tools/record/events_cache.go`):
//! a token bucket per key, the keys held in an LRU cache of a fixed size (`maxLruCacheEntries =
//! 4096` there). A burst of Events about many objects (65,000 pods nominated in one batch) thus
//! costs the same per Event as one about a few; a key pushed out of the cache starts afresh with
//! a full bucket, which only lets a forgotten object's Events through again.

use std::num::NonZeroUsize;

use lru::LruCache;

/// Keys remembered, at most (client-go's `maxLruCacheEntries`).
pub const SPAM_KEYS: usize = 4096;
/// Events of one object and reason published back to back before the filter holds them back.
pub const EVENT_BURST: u32 = 10;
/// …then one more each this many seconds.
pub const EVENT_REFILL: i64 = 60;

/// (object, reason) → (tokens left, when last refilled), least recently used first out.
pub struct SpamFilter {
    buckets: LruCache<(String, String), (u32, i64)>,
}

impl Default for SpamFilter {
    fn default() -> Self {
        SpamFilter::with_capacity(SPAM_KEYS)
    }
}

impl SpamFilter {
    /// A filter remembering at most `keys` (object, reason) pairs.
    pub fn with_capacity(keys: usize) -> Self {
        SpamFilter {
            buckets: LruCache::new(NonZeroUsize::new(keys.max(1)).expect("at least one")),
        }
    }

    /// Whether an Event of this object and reason may go out at `now` (Unix seconds); it takes
    /// a token when it may.
    pub fn admit(&mut self, object: String, reason: &str, now: i64) -> bool {
        let (tokens, at) = self
            .buckets
            .get_or_insert_mut((object, reason.to_string()), || (EVENT_BURST, now));
        let refill = ((now - *at) / EVENT_REFILL).clamp(0, i64::from(EVENT_BURST)) as u32;
        if refill > 0 {
            *tokens = (*tokens + refill).min(EVENT_BURST);
            *at = now;
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_of_one_event_is_cut_to_the_burst_then_one_per_refill() {
        let mut f = SpamFilter::default();
        let admitted = (0..50)
            .filter(|_| f.admit("Pod/ns/web".into(), "Nominated", 1000))
            .count();
        assert_eq!(admitted, EVENT_BURST as usize);
        // Another reason, or another object, has its own bucket.
        assert!(f.admit("Pod/ns/web".into(), "FailedScheduling", 1000));
        assert!(f.admit("Pod/ns/api".into(), "Nominated", 1000));
        // Within the refill period nothing more; after it, one.
        assert!(!f.admit("Pod/ns/web".into(), "Nominated", 1000 + EVENT_REFILL - 1));
        assert!(f.admit("Pod/ns/web".into(), "Nominated", 1000 + EVENT_REFILL));
        assert!(!f.admit("Pod/ns/web".into(), "Nominated", 1000 + EVENT_REFILL));
    }

    #[test]
    fn events_about_many_objects_keep_the_filter_at_its_size() {
        let mut f = SpamFilter::default();
        // The first key's bucket is emptied…
        for _ in 0..EVENT_BURST {
            assert!(f.admit("Pod/ns/p0".into(), "Nominated", 1000));
        }
        assert!(!f.admit("Pod/ns/p0".into(), "Nominated", 1000));
        for i in 1..3 * SPAM_KEYS {
            assert!(f.admit(format!("Pod/ns/p{i}"), "Nominated", 1000));
        }
        assert_eq!(f.len(), SPAM_KEYS);
        // The most recent keep their buckets; the oldest were forgotten and start afresh.
        let last = format!("Pod/ns/p{}", 3 * SPAM_KEYS - 1);
        for _ in 1..EVENT_BURST {
            assert!(f.admit(last.clone(), "Nominated", 1000));
        }
        assert!(!f.admit(last, "Nominated", 1000));
        // …and, pushed out by thousands of others, it is forgotten: a full bucket again.
        assert!(f.admit("Pod/ns/p0".into(), "Nominated", 1000));
    }
}
