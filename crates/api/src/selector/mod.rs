//! Label and field selectors: parsing, matching, and the selectable fields of each kind.
//!
//! - [`LabelSelector`]: upstream's string syntax and the `metav1.LabelSelector` object form;
//! - [`FieldSelector`]: `field=value` terms, with [`selectable_fields`] giving what each kind
//!   exposes and [`check_field_label`]/[`convert_field_label`] what each API version accepts.

mod field;
mod label;
mod names;
mod view;

pub use field::{
    check_field_label, convert_field_label, escape_value, selectable_fields, unescape_value,
    FieldOperator, FieldRequirement, FieldSelector,
};
pub use label::{LabelSelector, Operator, Requirement};
pub use view::selector_view;
