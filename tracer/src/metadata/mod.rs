//! Who a network namespace belongs to.

pub mod netns;

pub use netns::{PodName, PodResolver};
