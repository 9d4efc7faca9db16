//! Kafka ACLs, derived from the topology (`schemas::topology`, the one home
//! of who writes and reads which topic): each stage's principal
//! (`settings::Principal::of`) may write the topics it produces and read the
//! topics its group consumes (and write their dead-letter topics), in its own
//! consumer group, with its own transactional ids. Nothing else: ingest's
//! login is refused on `stock-decided`. The broker runs the standard
//! authorizer (KRaft `StandardAuthorizer`); the admin and the broker are its
//! super users (stack/kafka/server.properties.tmpl).
//!
//! `firstcome topics create` applies [`pipeline_acls`] for the deployment's
//! prefix; the test kit applies them for each test's prefix (literal names).
//! rust-rdkafka has no ACL call, so [`create_acls`] calls librdkafka's
//! `rd_kafka_CreateAcls` itself.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;
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
    /// `User:<name>`.
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
/// topology's routes, resolved like the services resolve them.
pub fn pipeline_acls(prefix: &str) -> Vec<Acl> {
    let topics = Topics::with_prefix(prefix);
    let mut acls = Vec::new();
    let mut allow = |stage: Stage, resource: Resource, pattern: Pattern, name: String, operations: &[Operation]| {
        for &operation in operations {
            acls.push(Acl {
                principal: format!("User:{}", Principal::of(stage).name()),
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
        allow(route.producer, Resource::Topic, Pattern::Literal, topic.clone(), &[Operation::Write, Operation::Read, Operation::Describe]);
        for &consumer in route.consumers {
            allow(consumer, Resource::Topic, Pattern::Literal, topic.clone(), &[Operation::Read, Operation::Describe]);
            // A record it cannot decode goes to the topic's dead letters.
            allow(consumer, Resource::Topic, Pattern::Literal, Topics::dlq(&topic), &[Operation::Write, Operation::Describe]);
        }
    }
    for stage in Stage::ALL {
        if let Some(group) = stage.group() {
            allow(stage, Resource::Group, Pattern::Literal, format!("{prefix}{group}"), &[Operation::Read, Operation::Describe]);
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

/// ACLs could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
    #[error("invalid ACL {acl}: {reason}")]
    Invalid { acl: String, reason: String },
    #[error("no answer to CreateAcls within {0:?}")]
    Timeout(Duration),
    #[error("CreateAcls failed: {0}")]
    Request(String),
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
    let settings = settings.clone();
    let acls = acls.to_vec();
    let timeout = Duration::from_millis(settings.delivery_timeout_ms.max(10_000));
    tokio::task::spawn_blocking(move || create_blocking(&settings, &acls, timeout))
        .await
        .map_err(|e| AclError::Task(e.to_string()))?
}

fn create_blocking(settings: &KafkaSettings, acls: &[Acl], timeout: Duration) -> Result<(), AclError> {
    let admin: AdminClient<DefaultClientContext> = base_config(settings, "firstcome-acl").create()?;
    let rk = admin.inner().native_ptr();
    let mut bindings = Vec::with_capacity(acls.len());
    let built = acls.iter().try_for_each(|acl| {
        bindings.push(binding(acl)?);
        Ok(())
    });
    // SAFETY: every pointer below is created here, used while `admin` lives,
    // and destroyed once, on every path.
    unsafe {
        if let Err(error) = built {
            for binding in bindings {
                rd::rd_kafka_AclBinding_destroy(binding);
            }
            return Err(error);
        }
        let queue = rd::rd_kafka_queue_new(rk);
        let options = rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS);
        rd::rd_kafka_CreateAcls(rk, bindings.as_mut_ptr(), bindings.len(), options, queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout.as_millis() as i32);
        let outcome = if event.is_null() {
            Err(AclError::Timeout(timeout))
        } else {
            let outcome = read_result(event, acls);
            rd::rd_kafka_event_destroy(event);
            outcome
        };
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AclBinding_destroy_array(bindings.as_mut_ptr(), bindings.len());
        outcome
    }
}

/// SAFETY: `event` is a live CreateAcls result event.
unsafe fn read_result(event: *mut rd::rd_kafka_event_t, acls: &[Acl]) -> Result<(), AclError> {
    if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(AclError::Request(text(rd::rd_kafka_event_error_string(event))));
    }
    let result = rd::rd_kafka_event_CreateAcls_result(event);
    if result.is_null() {
        return Err(AclError::Request("not a CreateAcls result".into()));
    }
    let mut count = 0;
    let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut count);
    for i in 0..count {
        let error = rd::rd_kafka_acl_result_error(*results.add(i));
        if !error.is_null() {
            let acl = acls.get(i).map(ToString::to_string).unwrap_or_default();
            return Err(AclError::Refused { acl, reason: text(rd::rd_kafka_error_string(error)) });
        }
    }
    Ok(())
}

fn binding(acl: &Acl) -> Result<*mut rd::rd_kafka_AclBinding_t, AclError> {
    let invalid = |reason: String| AclError::Invalid { acl: acl.to_string(), reason };
    let name = CString::new(acl.name.as_str()).map_err(|e| invalid(e.to_string()))?;
    let principal = CString::new(acl.principal.as_str()).map_err(|e| invalid(e.to_string()))?;
    let host = CString::new("*").expect("no NUL");
    let resource = match acl.resource {
        Resource::Topic => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
        Resource::Group => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_GROUP,
        Resource::TransactionalId => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
    };
    let pattern = match acl.pattern {
        Pattern::Literal => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
        Pattern::Prefixed => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
    };
    let operation = match acl.operation {
        Operation::Read => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_READ,
        Operation::Write => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_WRITE,
        Operation::Describe => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_DESCRIBE,
    };
    let mut errstr = [0 as c_char; 512];
    // SAFETY: the strings outlive the call (librdkafka copies them); errstr is writable.
    let binding = unsafe {
        rd::rd_kafka_AclBinding_new(
            resource,
            name.as_ptr(),
            pattern,
            principal.as_ptr(),
            host.as_ptr(),
            operation,
            rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if binding.is_null() {
        // SAFETY: librdkafka wrote a NUL-terminated message.
        return Err(invalid(unsafe { text(errstr.as_ptr()) }));
    }
    Ok(binding)
}

/// SAFETY: `ptr` is null or a NUL-terminated string.
unsafe fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    CStr::from_ptr(ptr).to_string_lossy().into_owned()
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
        assert!(acls.iter().filter(|acl| acl.principal == "User:ingest" && acl.resource == Resource::Group)
            .all(|acl| acl.operation == Operation::Describe));
        assert!(acls.iter().any(|acl| acl.principal == "User:stock"
            && acl.resource == Resource::TransactionalId
            && acl.pattern == Pattern::Prefixed
            && acl.name == "firstcome-stock-p."));
        assert!(allows(&acls, "recorder", Operation::Read, "p.gift-dispatched"));
        assert!(allows(&acls, "recorder", Operation::Write, &Topics::dlq("p.gift-dispatched")));
    }
}
