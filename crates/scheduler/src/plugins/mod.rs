//! The in-tree plugins, one module each.

pub mod defaultbinder;
pub mod defaultpreemption;
pub mod imagelocality;
pub mod interpodaffinity;
pub mod nodeaffinity;
pub mod nodename;
pub mod nodeports;
pub mod noderesources;
pub mod nodeunschedulable;
pub mod podtopologyspread;
pub mod queuesort;
pub mod tainttoleration;
