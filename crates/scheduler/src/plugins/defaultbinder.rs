//! DefaultBinder: binds through the `pods/binding` subresource (the scheduler issues the call).

use crate::framework::{BindPlugin, Plugin};
use crate::types::PodInfo;

/// The plugin's name.
pub const NAME: &str = "DefaultBinder";

/// The DefaultBinder plugin.
pub struct DefaultBinder;

impl Plugin for DefaultBinder {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        Some(self)
    }
}

impl BindPlugin for DefaultBinder {
    fn handles(&self, _: &PodInfo) -> bool {
        true
    }
}
