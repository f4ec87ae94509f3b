//! Who a network namespace belongs to.

pub mod cookies;
pub mod netns;

pub use netns::{PodName, PodResolver};
