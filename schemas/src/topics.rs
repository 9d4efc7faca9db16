//! Topic and subject names.
//!
//! Subjects follow the TopicNameStrategy (`<topic>-value`). A prefix lets
//! several environments (or test runs) share one cluster and one registry.

/// The topics of one firstcome deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub survey_submitted: String,
    pub stock_decided: String,
    pub gift_dispatched: String,
    pub stock_released: String,
}

/// Suffix of the dead-letter topic beside each source topic.
pub const DLQ_SUFFIX: &str = ".dlq";

impl Topics {
    pub const SURVEY_SUBMITTED: &'static str = "survey-submitted";
    pub const STOCK_DECIDED: &'static str = "stock-decided";
    pub const GIFT_DISPATCHED: &'static str = "gift-dispatched";
    pub const STOCK_RELEASED: &'static str = "stock-released";

    /// Topic names with `prefix` in front (empty for the standard names).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            survey_submitted: format!("{prefix}{}", Self::SURVEY_SUBMITTED),
            stock_decided: format!("{prefix}{}", Self::STOCK_DECIDED),
            gift_dispatched: format!("{prefix}{}", Self::GIFT_DISPATCHED),
            stock_released: format!("{prefix}{}", Self::STOCK_RELEASED),
        }
    }

    /// The four event topics, in pipeline order.
    pub fn all(&self) -> [&str; 4] {
        [&self.survey_submitted, &self.stock_decided, &self.gift_dispatched, &self.stock_released]
    }

    /// This deployment's name of the standard topic `name` (one of the
    /// constants above, as used by `crate::topology`), if it is one.
    pub fn named(&self, name: &str) -> Option<&str> {
        match name {
            Self::SURVEY_SUBMITTED => Some(&self.survey_submitted),
            Self::STOCK_DECIDED => Some(&self.stock_decided),
            Self::GIFT_DISPATCHED => Some(&self.gift_dispatched),
            Self::STOCK_RELEASED => Some(&self.stock_released),
            _ => None,
        }
    }

    /// The dead-letter topic for records that failed on `topic`.
    pub fn dlq(topic: &str) -> String {
        format!("{topic}{DLQ_SUFFIX}")
    }

    /// The registry subject of the values on `topic` (TopicNameStrategy).
    pub fn value_subject(topic: &str) -> String {
        format!("{topic}-value")
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_goes_in_front_of_every_topic() {
        let topics = Topics::with_prefix("t1.");
        assert_eq!(topics.survey_submitted, "t1.survey-submitted");
        assert!(topics.all().iter().all(|t| t.starts_with("t1.")));
    }

    #[test]
    fn a_standard_name_resolves_to_the_prefixed_one() {
        let topics = Topics::with_prefix("t1.");
        assert_eq!(topics.named(Topics::STOCK_RELEASED), Some("t1.stock-released"));
        assert_eq!(topics.named("t1.stock-released"), None);
    }

    #[test]
    fn subjects_and_dead_letters_follow_the_topic_name() {
        assert_eq!(Topics::value_subject("survey-submitted"), "survey-submitted-value");
        assert_eq!(Topics::dlq("stock-decided"), "stock-decided.dlq");
    }
}
