//! Pods as Kubernetes names them: watchers keep a picture of the cluster's
//! pods, Services and endpoints ([`cluster`]), and [`source`] names each
//! network namespace on this node by the pod whose IP it holds.

pub mod cluster;
pub mod model;
pub mod source;
pub mod watch;

pub use cluster::ClusterState;
pub use source::KubernetesPods;
