//! PrioritySort: higher `spec.priority` first, then the earlier queued.

use crate::framework::{Plugin, QueueSortPlugin};
use crate::types::PodInfo;

/// The plugin's name.
pub const NAME: &str = "PrioritySort";

/// The PrioritySort plugin.
pub struct PrioritySort;

impl Plugin for PrioritySort {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        Some(self)
    }
}

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: (&PodInfo, u64), b: (&PodInfo, u64)) -> bool {
        a.0.priority > b.0.priority || (a.0.priority == b.0.priority && a.1 < b.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{info, pod};
    use serde_json::json;

    #[test]
    fn priority_then_time() {
        let hi = info(pod("hi", "0", "0", json!({"spec": {"priority": 10}})));
        let lo = info(pod("lo", "0", "0", json!({})));
        assert!(PrioritySort.less((&hi, 5), (&lo, 1)));
        assert!(!PrioritySort.less((&lo, 1), (&hi, 5)));
        assert!(PrioritySort.less((&lo, 1), (&lo, 2)));
    }
}
