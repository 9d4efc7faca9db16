//! Kafka ACLs, derived from the topology (`schemas::topology`, the one home
//! of who writes and reads which topic): each stage's principal
//! (`settings::Principal::of`) may write the topics it produces and read the
//! topics its group consumes (and write their dead-letter topics), in its own
//! consumer group, with its own transactional ids. Nothing else: ingest's
//! login is refused on `stock-decided`. Two stages may also describe what
//! they do not own (offsets and watermarks, never records): ingest's
//! operations dashboard every topic and group, and the sender the entries
//! topic and the recorder's group (whether the recorder read past an entry).
//! The broker runs the standard authorizer (KRaft `StandardAuthorizer`); the
//! admin and the broker are its super users (stack/kafka/server.properties.tmpl).
//!
//! `firstcome topics create` applies [`pipeline_acls`] for the deployment's
//! prefix; the test kit applies them for each test's prefix (literal names),
//! and `firstcome-lab cleanup-tests` removes them again ([`describe_acls`],
//! [`delete_acls`]). rust-rdkafka has no ACL call, so these call librdkafka's
//! `rd_kafka_CreateAcls`, `_DescribeAcls` and `_DeleteAcls` themselves:
//! the `ffi` module (the only `unsafe` code of Kafka ACLs).

mod ffi;

use std::time::Duration;

use rdkafka::error::KafkaError;
use schemas::topology::{self, Stage};
use schemas::Topics;

use super::base_config;
use crate::settings::{KafkaSettings, Principal};

/// What an ACL is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Topic,
    Group,
    TransactionalId,
}

/// How the ACL's name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    Literal,
    Prefixed,
}

/// What the ACL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    Read,
    Write,
    Describe,
}

/// One ALLOW ACL, from any host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acl {
    /// `User:<name>`, or the principal `kafka.principals` names.
    pub principal: String,
    pub resource: Resource,
    pub pattern: Pattern,
    pub name: String,
    pub operation: Operation,
}

impl std::fmt::Display for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {:?}:{:?}:{}", self.principal, self.operation, self.resource, self.pattern, self.name)
    }
}

/// The transactional ids of the stock stage behind `prefix`
/// (`firstcome-stock-<prefix><instance>`, stock-processor's settings).
pub fn stock_transactional_prefix(prefix: &str) -> String {
    format!("firstcome-stock-{prefix}")
}

/// Every ACL of the pipeline for the topic and group prefix `prefix`: the
/// topology's routes, resolved like the services resolve them, each stage's
/// principal `User:<name>` (the stack's SCRAM users).
pub fn pipeline_acls(prefix: &str) -> Vec<Acl> {
    pipeline_acls_as(prefix, |principal| format!("User:{}", principal.name()))
}

/// [`pipeline_acls`] for the deployment `kafka` describes: its topic prefix,
/// and each stage's principal as `kafka.principals` names it (a hosted
/// cluster's service accounts).
pub fn deployment_acls(kafka: &KafkaSettings) -> Vec<Acl> {
    pipeline_acls_as(&kafka.topic_prefix, |principal| kafka.acl_principal(principal))
}

/// [`pipeline_acls`] with each stage's Kafka principal given by `principal_of`.
pub fn pipeline_acls_as(prefix: &str, principal_of: impl Fn(Principal) -> String) -> Vec<Acl> {
    let topics = Topics::with_prefix(prefix);
    let mut acls = Vec::new();
    let mut allow = |stage: Stage, resource: Resource, pattern: Pattern, name: String, operations: &[Operation]| {
        for &operation in operations {
            acls.push(Acl {
                principal: principal_of(Principal::of(stage)),
                resource,
                pattern,
                name: name.clone(),
                operation,
            });
        }
    };
    for route in &topology::ROUTES {
        let topic = topics.named(route.topic).expect("every route names a known topic").to_string();
        // The producer writes it (and may read it back: the stock stage rebuilds from its log).
        allow(
            route.producer,
            Resource::Topic,
            Pattern::Literal,
            topic.clone(),
            &[Operation::Write, Operation::Read, Operation::Describe],
        );
        for &consumer in route.consumers {
            allow(consumer, Resource::Topic, Pattern::Literal, topic.clone(), &[Operation::Read, Operation::Describe]);
            // A record it cannot decode goes to the topic's dead letters.
            allow(
                consumer,
                Resource::Topic,
                Pattern::Literal,
                Topics::dlq(&topic),
                &[Operation::Write, Operation::Describe],
            );
        }
    }
    for stage in Stage::ALL {
        if let Some(group) = stage.group() {
            allow(
                stage,
                Resource::Group,
                Pattern::Literal,
                format!("{prefix}{group}"),
                &[Operation::Read, Operation::Describe],
            );
        }
    }
    // Ingest's operations dashboard shows each group's lag and the dead letters:
    // it may describe (offsets, watermarks), never read or write, what it does not own.
    for route in &topology::ROUTES {
        let topic = topics.named(route.topic).expect("every route names a known topic").to_string();
        allow(Stage::Ingest, Resource::Topic, Pattern::Literal, Topics::dlq(&topic), &[Operation::Describe]);
        allow(Stage::Ingest, Resource::Topic, Pattern::Literal, topic, &[Operation::Describe]);
    }
    for stage in Stage::ALL {
        if let Some(group) = stage.group() {
            allow(Stage::Ingest, Resource::Group, Pattern::Literal, format!("{prefix}{group}"), &[Operation::Describe]);
        }
    }
    // The sender pays a WON only for an entry the recorder holds, and judges a
    // missing one forged only once the recorder has read past it: it reads the
    // entries topic's watermarks and the recorder's committed offsets there
    // (`sender::entries`). Describe only: it never reads the entries nor joins the group.
    let entries_topic = topics.named(Topics::SURVEY_SUBMITTED).expect("the entries topic is known").to_string();
    allow(Stage::Dispatch, Resource::Topic, Pattern::Literal, entries_topic, &[Operation::Describe]);
    if let Some(recorder) = Stage::Recording.group() {
        allow(
            Stage::Dispatch,
            Resource::Group,
            Pattern::Literal,
            format!("{prefix}{recorder}"),
            &[Operation::Describe],
        );
    }
    // The stock stage's rebuild reads the log under its own group ids (`<prefix>stock-rebuild-…`).
    allow(
        Stage::Stock,
        Resource::Group,
        Pattern::Prefixed,
        format!("{prefix}{}-rebuild-", topology::group::STOCK),
        &[Operation::Read, Operation::Describe],
    );
    allow(
        Stage::Stock,
        Resource::TransactionalId,
        Pattern::Prefixed,
        stock_transactional_prefix(prefix),
        &[Operation::Write, Operation::Describe],
    );
    acls.sort();
    acls.dedup();
    acls
}

/// An ACL request failed.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
    #[error("invalid ACL {acl}: {reason}")]
    Invalid { acl: String, reason: String },
    #[error("no answer to {request} within {after:?}")]
    Timeout { request: &'static str, after: Duration },
    #[error("{request} failed: {reason}")]
    Request { request: &'static str, reason: String },
    #[error("ACL {acl} refused: {reason}")]
    Refused { acl: String, reason: String },
    #[error("the ACL task failed: {0}")]
    Task(String),
}

/// Creates `acls` (idempotent: an existing ACL is created again without
/// error). Needs a principal allowed to alter the cluster (the admin).
pub async fn create_acls(settings: &KafkaSettings, acls: &[Acl]) -> Result<(), AclError> {
    if acls.is_empty() {
        return Ok(());
    }
    let acls = acls.to_vec();
    blocking(settings, move |admin, timeout| create_blocking(admin, &acls, timeout)).await
}

/// Every ALLOW ACL of the cluster this module can express (other kinds — DENY,
/// cluster-wide, other operations — are left out). Needs the admin.
pub async fn describe_acls(settings: &KafkaSettings) -> Result<Vec<Acl>, AclError> {
    blocking(settings, |admin, timeout| describe_blocking(admin, None, timeout)).await
}

/// [`describe_acls`] of one resource name (literal or prefixed bindings of
/// exactly that name): a small answer on a broker with many ACLs.
pub async fn describe_acls_on(settings: &KafkaSettings, resource: Resource, name: &str) -> Result<Vec<Acl>, AclError> {
    let name = name.to_string();
    blocking(settings, move |admin, timeout| describe_blocking(admin, Some((resource, &name)), timeout)).await
}

/// Waits until the broker's authorizer holds every one of `acls` (created
/// through the controller, they reach the broker through its metadata log a
/// moment later): a client using them right after [`create_acls`] could
/// otherwise be refused.
pub async fn wait_until_described(settings: &KafkaSettings, acls: &[Acl], deadline: Duration) -> Result<(), AclError> {
    let mut names: Vec<(Resource, &str)> = acls.iter().map(|acl| (acl.resource, acl.name.as_str())).collect();
    names.sort();
    names.dedup();
    let started = std::time::Instant::now();
    for (resource, name) in names {
        loop {
            let described = describe_acls_on(settings, resource, name).await?;
            let missing =
                acls.iter().find(|acl| acl.resource == resource && acl.name == name && !described.contains(acl));
            let Some(missing) = missing else { break };
            if started.elapsed() > deadline {
                return Err(AclError::Refused {
                    acl: missing.to_string(),
                    reason: format!("not in effect after {deadline:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Deletes exactly `acls` (an ACL that is not there is no error); returns how
/// many bindings the broker removed. Needs the admin.
pub async fn delete_acls(settings: &KafkaSettings, acls: &[Acl]) -> Result<usize, AclError> {
    if acls.is_empty() {
        return Ok(0);
    }
    let acls = acls.to_vec();
    blocking(settings, move |admin, timeout| delete_blocking(admin, &acls, timeout)).await
}

use ffi::{create_blocking, delete_blocking, describe_blocking, Admin};

/// Runs `call` with an admin client, off the async workers (librdkafka's admin
/// results are polled, blocking).
async fn blocking<T, F>(settings: &KafkaSettings, call: F) -> Result<T, AclError>
where
    T: Send + 'static,
    F: FnOnce(&Admin, Duration) -> Result<T, AclError> + Send + 'static,
{
    let settings = settings.clone();
    let timeout = Duration::from_millis(settings.delivery_timeout_ms.max(10_000));
    tokio::task::spawn_blocking(move || {
        let admin: Admin = base_config(&settings, "firstcome-acl").create()?;
        call(&admin, timeout)
    })
    .await
    .map_err(|e| AclError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(acls: &[Acl], principal: &str, operation: Operation, topic: &str) -> bool {
        acls.iter().any(|acl| {
            acl.principal == format!("User:{principal}")
                && acl.resource == Resource::Topic
                && acl.name == topic
                && acl.operation == operation
        })
    }

    #[test]
    fn only_each_topics_producer_writes_it() {
        let acls = pipeline_acls("p.");
        assert!(allows(&acls, "ingest", Operation::Write, "p.survey-submitted"));
        assert!(allows(&acls, "stock", Operation::Write, "p.stock-decided"));
        assert!(allows(&acls, "sender", Operation::Write, "p.gift-dispatched"));
        assert!(allows(&acls, "sender", Operation::Write, "p.stock-released"));
        for topic in ["p.stock-decided", "p.gift-dispatched", "p.stock-released"] {
            assert!(!allows(&acls, "ingest", Operation::Write, topic), "ingest writes {topic}");
        }
        for principal in ["ingest", "recorder", "sender"] {
            assert!(!allows(&acls, principal, Operation::Write, "p.stock-decided"), "{principal} writes stock-decided");
        }
        assert!(!allows(&acls, "ingest", Operation::Read, "p.stock-decided"), "ingest reads nothing");
        let ingest: Vec<_> =
            acls.iter().filter(|acl| acl.principal == "User:ingest" && acl.operation != Operation::Describe).collect();
        assert!(ingest.iter().all(|acl| acl.name == "p.survey-submitted"), "{ingest:?}");
    }

    #[test]
    fn each_group_is_its_stages_and_the_stock_stage_owns_its_transactions() {
        let acls = pipeline_acls("p.");
        let group = |principal: &str, name: &str| {
            acls.iter().any(|acl| {
                acl.principal == format!("User:{principal}") && acl.resource == Resource::Group && acl.name == name
            })
        };
        assert!(group("stock", "p.stock") && group("recorder", "p.recording") && group("sender", "p.dispatch"));
        assert!(!group("sender", "p.stock"));
        // Ingest's dashboard only describes the groups (their offsets).
        assert!(acls
            .iter()
            .filter(|acl| acl.principal == "User:ingest" && acl.resource == Resource::Group)
            .all(|acl| acl.operation == Operation::Describe));
        assert!(acls.iter().any(|acl| acl.principal == "User:stock"
            && acl.resource == Resource::TransactionalId
            && acl.pattern == Pattern::Prefixed
            && acl.name == "firstcome-stock-p."));
        assert!(allows(&acls, "recorder", Operation::Read, "p.gift-dispatched"));
        assert!(allows(&acls, "recorder", Operation::Write, &Topics::dlq("p.gift-dispatched")));
    }

    #[test]
    fn the_sender_may_only_describe_the_entries_topic_and_the_recorders_group() {
        let acls = pipeline_acls("p.");
        let sender_on = |name: &str| -> Vec<(Resource, Operation)> {
            acls.iter()
                .filter(|acl| acl.principal == "User:sender" && acl.name == name)
                .map(|acl| (acl.resource, acl.operation))
                .collect()
        };
        assert_eq!(sender_on("p.survey-submitted"), vec![(Resource::Topic, Operation::Describe)]);
        assert_eq!(sender_on("p.recording"), vec![(Resource::Group, Operation::Describe)]);
        assert!(!allows(&acls, "sender", Operation::Read, "p.survey-submitted"), "the sender reads no entry");
        assert!(sender_on(&Topics::dlq("p.survey-submitted")).is_empty());
        assert!(sender_on("p.stock").is_empty(), "nor the stock stage's progress");
        // Everything else the sender holds is its own: its inputs, outputs, dead letters and group.
        let own = ["p.stock-decided", "p.stock-decided.dlq", "p.gift-dispatched", "p.stock-released", "p.dispatch"];
        let others: Vec<_> = acls
            .iter()
            .filter(|acl| acl.principal == "User:sender")
            .filter(|acl| {
                !own.contains(&acl.name.as_str()) && acl.name != "p.survey-submitted" && acl.name != "p.recording"
            })
            .collect();
        assert!(others.is_empty(), "{others:?}");
    }

    #[test]
    fn a_deployment_grants_its_configured_principals() {
        let mut kafka = KafkaSettings { topic_prefix: "prod.".into(), ..Default::default() };
        kafka.principals.insert("stock".into(), "User:sa-stock42".into());
        let acls = deployment_acls(&kafka);
        assert!(allows(&acls, "sa-stock42", Operation::Write, "prod.stock-decided"));
        assert!(!acls.iter().any(|acl| acl.principal == "User:stock"), "the stock stage's default principal is gone");
        assert!(allows(&acls, "ingest", Operation::Write, "prod.survey-submitted"));
        let mut renamed: Vec<Acl> = acls
            .iter()
            .map(|acl| Acl { principal: acl.principal.replace("sa-stock42", "stock"), ..acl.clone() })
            .collect();
        renamed.sort();
        assert_eq!(renamed, pipeline_acls("prod."), "the same grants, only the principal differs");
    }
}
