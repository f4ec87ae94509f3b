//! Questions answered from the session's own task, so the pipeline needs no
//! lock: the HTTP server sends a query and awaits the reply.

use tokio::sync::oneshot;

use crate::{
    analysis::findings::{Finding, Scope},
    pipeline::Pipeline,
};

pub enum Query {
    Findings {
        scope: Scope,
        reply: oneshot::Sender<Vec<Finding>>,
    },
}

impl Query {
    pub fn answer(self, pipeline: &Pipeline) {
        match self {
            Query::Findings { scope, reply } => {
                let _ = reply.send(pipeline.analysis.findings(&scope));
            }
        }
    }
}
