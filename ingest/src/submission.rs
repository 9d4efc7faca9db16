//! The entry request body and its validation against the event's survey.
//!
//! Shape errors are caught by serde (axum answers 422 through [`ApiError`]);
//! the rules below need the event (its required questions) and the limits.

use std::fmt;

use schemas::{ClientInfo, SurveyAnswer};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;
use crate::settings::Limits;

/// Longest client channel name and user agent kept.
const MAX_CHANNEL_CHARS: usize = 32;
const MAX_USER_AGENT_CHARS: usize = 256;

/// `{"answers": {"<question id>": "<answer>", …}, "client": {…}}`
#[derive(Debug, Deserialize)]
pub struct EntryBody {
    pub answers: Answers,
    #[serde(default)]
    pub client: Option<ClientBody>,
}

#[derive(Debug, Deserialize)]
pub struct ClientBody {
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// The answers in the order the member gave them (a JSON object's order is
/// kept; a plain map would sort it). A question answered twice is a shape error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Answers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor;
        impl<'de> Visitor<'de> for OrderedVisitor {
            type Value = Answers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of question id to answer text")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Answers, A::Error> {
                let mut answers: Vec<(String, String)> = Vec::new();
                while let Some((question, answer)) = map.next_entry::<String, String>()? {
                    if answers.iter().any(|(q, _)| *q == question) {
                        return Err(serde::de::Error::custom(format!("question {question:?} answered twice")));
                    }
                    answers.push((question, answer));
                }
                Ok(Answers(answers))
            }
        }
        deserializer.deserialize_map(OrderedVisitor)
    }
}

/// A body that passed every rule, ready to become a `SurveySubmitted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub answers: Vec<SurveyAnswer>,
    pub client: ClientInfo,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::Invalid { field: field.into(), message: message.into() }
}

impl EntryBody {
    /// Checks the answers against the event's required `questions` and the
    /// limits. Questions beyond the required ones are kept (optional ones).
    /// `header_user_agent` is used when the body names none.
    pub fn validate(
        self,
        questions: &[String],
        limits: &Limits,
        header_user_agent: Option<&str>,
    ) -> Result<Submission, ApiError> {
        let answers = self.answers.0;
        if answers.len() > limits.max_answers {
            return Err(invalid("answers", format!("at most {} answers", limits.max_answers)));
        }
        for (question, answer) in &answers {
            let field = format!("answers.{question}");
            if question.trim().is_empty()
                || question.chars().count() > limits.max_answer_chars
                || question.chars().any(char::is_control)
            {
                return Err(invalid(field, "invalid question id"));
            }
            if answer.trim().is_empty() {
                return Err(invalid(field, "empty answer"));
            }
            // Line breaks and tabs are text; other control characters (NUL
            // above all, which PostgreSQL's jsonb refuses) are not.
            if answer.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
                return Err(invalid(field, "control characters are not allowed"));
            }
            if answer.chars().count() > limits.max_answer_chars {
                return Err(invalid(field, format!("longer than {} characters", limits.max_answer_chars)));
            }
        }
        if let Some(missing) = questions.iter().find(|q| !answers.iter().any(|(a, _)| a == *q)) {
            return Err(invalid(format!("answers.{missing}"), "required question not answered"));
        }
        let (channel, body_agent) = match self.client {
            Some(client) => (client.channel, client.user_agent),
            None => (None, None),
        };
        let channel = channel.unwrap_or_else(|| "web".to_string());
        if channel.trim().is_empty()
            || channel.chars().count() > MAX_CHANNEL_CHARS
            || !channel.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid("client.channel", "letters, digits, - and _ only, at most 32"));
        }
        let user_agent = body_agent
            .or_else(|| header_user_agent.map(str::to_string))
            .map(|ua| ua.chars().filter(|c| !c.is_control()).take(MAX_USER_AGENT_CHARS).collect::<String>())
            .filter(|ua| !ua.is_empty());
        Ok(Submission {
            answers: answers.into_iter().map(|(question, answer)| SurveyAnswer { question, answer }).collect(),
            client: ClientInfo { channel, user_agent },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> EntryBody {
        serde_json::from_str(json).unwrap()
    }

    fn questions() -> Vec<String> {
        vec!["q1".into(), "q2".into()]
    }

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::Invalid { field, .. } => field,
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn answers_keep_the_order_given() {
        let s = body(r#"{"answers": {"q2": "b", "q1": "a", "extra": "c"}}"#)
            .validate(&questions(), &Limits::default(), None)
            .unwrap();
        let order: Vec<&str> = s.answers.iter().map(|a| a.question.as_str()).collect();
        assert_eq!(order, ["q2", "q1", "extra"]);
    }

    #[test]
    fn control_characters_are_refused_but_line_breaks_kept() {
        let nul =
            body(r#"{"answers": {"q1": "a\u0000b", "q2": "x"}}"#).validate(&questions(), &Limits::default(), None);
        assert_eq!(field_of(nul.unwrap_err()), "answers.q1");
        let bad_question = body(r#"{"answers": {"q1": "a", "q2": "b", "q\u0007": "c"}}"#).validate(
            &questions(),
            &Limits::default(),
            None,
        );
        assert!(bad_question.is_err());
        let lines = body(r#"{"answers": {"q1": "line one\nline two\ttab", "q2": "x"}}"#).validate(
            &questions(),
            &Limits::default(),
            None,
        );
        assert!(lines.is_ok());
    }

    #[test]
    fn a_question_answered_twice_is_a_shape_error() {
        assert!(serde_json::from_str::<EntryBody>(r#"{"answers": {"q1": "a", "q1": "b"}}"#).is_err());
    }

    #[test]
    fn a_non_text_answer_is_a_shape_error() {
        assert!(serde_json::from_str::<EntryBody>(r#"{"answers": {"q1": 5}}"#).is_err());
        assert!(serde_json::from_str::<EntryBody>(r#"{"answers": ["q1"]}"#).is_err());
    }

    #[test]
    fn a_missing_required_answer_names_the_question() {
        let err = body(r#"{"answers": {"q1": "a"}}"#).validate(&questions(), &Limits::default(), None).unwrap_err();
        assert_eq!(field_of(err), "answers.q2");
    }

    #[test]
    fn empty_and_overlong_answers_are_refused() {
        let limits = Limits { max_answer_chars: 3, ..Default::default() };
        let err = body(r#"{"answers": {"q1": " ", "q2": "b"}}"#).validate(&questions(), &limits, None).unwrap_err();
        assert_eq!(field_of(err), "answers.q1");
        let err = body(r#"{"answers": {"q1": "a", "q2": "bbbb"}}"#).validate(&questions(), &limits, None).unwrap_err();
        assert_eq!(field_of(err), "answers.q2");
    }

    #[test]
    fn too_many_answers_are_refused() {
        let limits = Limits { max_answers: 2, ..Default::default() };
        let err = body(r#"{"answers": {"q1": "a", "q2": "b", "q3": "c"}}"#)
            .validate(&questions(), &limits, None)
            .unwrap_err();
        assert_eq!(field_of(err), "answers");
    }

    #[test]
    fn the_client_defaults_to_web_with_the_header_user_agent() {
        let s = body(r#"{"answers": {"q1": "a", "q2": "b"}}"#)
            .validate(&questions(), &Limits::default(), Some("curl/8"))
            .unwrap();
        assert_eq!(s.client, ClientInfo { channel: "web".into(), user_agent: Some("curl/8".into()) });
        let s = body(r#"{"answers": {"q1": "a", "q2": "b"}, "client": {"channel": "app", "user_agent": "ios"}}"#)
            .validate(&questions(), &Limits::default(), Some("curl/8"))
            .unwrap();
        assert_eq!(s.client, ClientInfo { channel: "app".into(), user_agent: Some("ios".into()) });
    }

    #[test]
    fn a_strange_channel_is_refused() {
        let err = body(r#"{"answers": {"q1": "a", "q2": "b"}, "client": {"channel": "we b"}}"#)
            .validate(&questions(), &Limits::default(), None)
            .unwrap_err();
        assert_eq!(field_of(err), "client.channel");
    }
}
