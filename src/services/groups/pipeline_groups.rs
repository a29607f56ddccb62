//! The handler pipeline's stages shown as read-only groups: stage `s` is the group
//! `kafkabox.s` (ListGroups, DescribeGroups and OffsetFetch show its positions, which are the
//! store's consumer offsets under `s`; clients cannot join it or commit to it), and the stages
//! retention waits for on a topic.

use super::Coordinator;

/// Prefix of the groups that show the handler pipeline's positions.
pub const PIPELINE_GROUP_PREFIX: &str = "kafkabox.";

/// A pipeline stage shown as a group.
#[derive(Debug, Clone)]
pub(super) struct PipelineGroup {
    pub(super) stage: String,
    pub(super) topics: Vec<String>,
}

impl Coordinator {
    /// Shows the pipeline stage `stage`, which reads `topic` (among others, perhaps), as the
    /// read-only group `kafkabox.<stage>`.
    pub fn register_pipeline(&self, stage: &str, topic: &str) {
        if let Ok(mut p) = self.pipeline.lock() {
            let e = p
                .entry(format!("{PIPELINE_GROUP_PREFIX}{stage}"))
                .or_insert_with(|| PipelineGroup {
                    stage: stage.to_string(),
                    topics: Vec::new(),
                });
            if !e.topics.iter().any(|t| t == topic) {
                e.topics.push(topic.to_string());
            }
        }
    }

    /// Forgets the topics of pipeline groups for which `exists` is false (deleted topics).
    pub fn retain_pipeline_topics(&self, exists: impl Fn(&str) -> bool) {
        if let Ok(mut p) = self.pipeline.lock() {
            for g in p.values_mut() {
                g.topics.retain(|t| exists(t));
            }
        }
    }

    /// The pipeline stages that read `topic` (their names, as committed in the store).
    pub fn pipeline_stages(&self, topic: &str) -> Vec<String> {
        match self.pipeline.lock() {
            Ok(p) => p
                .values()
                .filter(|g| g.topics.iter().any(|t| t == topic))
                .map(|g| g.stage.clone())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The pipeline group `id` (`kafkabox.<stage>`), if a stage is shown as it.
    pub(super) fn pipeline_group(&self, id: &str) -> Option<PipelineGroup> {
        self.pipeline.lock().ok()?.get(id).cloned()
    }
}
