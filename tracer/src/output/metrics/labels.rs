//! The label sets of the metric families (their names are a contract).

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct OpenedLabels {
    pub namespace: String,
    pub pod: String,
    /// Empty without a cluster, and then not exported.
    pub workload: String,
    pub direction: String,
    pub role: String,
}

impl EncodeLabelSet for OpenedLabels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        let mut pairs = vec![
            ("namespace", self.namespace.as_str()),
            ("pod", self.pod.as_str()),
        ];
        if !self.workload.is_empty() {
            pairs.push(("workload", self.workload.as_str()));
        }
        pairs.push(("direction", self.direction.as_str()));
        pairs.push(("role", self.role.as_str()));
        pairs.as_slice().encode(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerCauseLabels {
    pub namespace: String,
    pub pod: String,
    pub direction: String,
    pub peer: String,
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodCauseLabels {
    pub namespace: String,
    pub pod: String,
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResetLabels {
    pub namespace: String,
    pub pod: String,
    pub direction: String,
    pub side: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub namespace: String,
    pub pod: String,
    pub direction: String,
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub namespace: String,
    pub pod: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    pub namespace: String,
    pub pod: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    pub namespace: String,
    pub pod: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LabelLabels {
    pub label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub probe: String,
}
