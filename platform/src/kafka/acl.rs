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
//! prefix; the test kit applies them for each test's prefix (literal names),
//! and `firstcome cleanup-tests` removes them again ([`describe_acls`],
//! [`delete_acls`]). rust-rdkafka has no ACL call, so these call librdkafka's
//! `rd_kafka_CreateAcls`, `_DescribeAcls` and `_DeleteAcls` themselves.

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
                return Err(AclError::Refused { acl: missing.to_string(), reason: format!("not in effect after {deadline:?}") });
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

type Admin = AdminClient<DefaultClientContext>;

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

/// One admin request: its name (for errors), its kind and how to find its
/// result in the reply event.
struct AdminRequest<R> {
    name: &'static str,
    op: rd::rd_kafka_admin_op_t,
    result_of: unsafe extern "C" fn(*mut rd::rd_kafka_event_t) -> *const R,
}

/// Sends one admin request (`send` gets the options and the reply queue) and
/// hands its result to `read`.
///
/// SAFETY: `send` must issue exactly one request of kind `request.op` on the
/// queue; `read` gets its live result, valid until `read` returns.
unsafe fn request<T, R>(
    admin: &Admin,
    request: AdminRequest<R>,
    timeout: Duration,
    send: impl FnOnce(*mut rd::rd_kafka_t, *const rd::rd_kafka_AdminOptions_t, *mut rd::rd_kafka_queue_t),
    read: impl FnOnce(*const R) -> Result<T, AclError>,
) -> Result<T, AclError> {
    let failed = |reason: String| AclError::Request { request: request.name, reason };
    let rk = admin.inner().native_ptr();
    let queue = rd::rd_kafka_queue_new(rk);
    let options = rd::rd_kafka_AdminOptions_new(rk, request.op);
    send(rk, options, queue);
    let event = rd::rd_kafka_queue_poll(queue, timeout.as_millis() as i32);
    let outcome = if event.is_null() {
        Err(AclError::Timeout { request: request.name, after: timeout })
    } else {
        let outcome = if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Err(failed(text(rd::rd_kafka_event_error_string(event))))
        } else {
            match (request.result_of)(event) {
                result if result.is_null() => Err(failed("the reply is not its result".into())),
                result => read(result),
            }
        };
        rd::rd_kafka_event_destroy(event);
        outcome
    };
    rd::rd_kafka_AdminOptions_destroy(options);
    rd::rd_kafka_queue_destroy(queue);
    outcome
}

/// Bindings (or filters: the same type in librdkafka) for `acls`, destroyed on drop.
struct Bindings(Vec<*mut rd::rd_kafka_AclBinding_t>);

impl Bindings {
    fn new(acls: &[Acl], filter: bool) -> Result<Self, AclError> {
        let mut bindings = Bindings(Vec::with_capacity(acls.len()));
        for acl in acls {
            bindings.0.push(binding(acl, filter)?);
        }
        Ok(bindings)
    }
}

impl Drop for Bindings {
    fn drop(&mut self) {
        for binding in self.0.drain(..) {
            // SAFETY: each pointer was created by `binding` and is destroyed once, here.
            unsafe { rd::rd_kafka_AclBinding_destroy(binding) };
        }
    }
}

fn create_blocking(admin: &Admin, acls: &[Acl], timeout: Duration) -> Result<(), AclError> {
    let mut bindings = Bindings::new(acls, false)?;
    let create = AdminRequest {
        name: "CreateAcls",
        op: rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS,
        result_of: rd::rd_kafka_event_CreateAcls_result,
    };
    // SAFETY: the bindings live until after the call (librdkafka copies them).
    unsafe {
        request(
            admin,
            create,
            timeout,
            |rk, options, queue| rd::rd_kafka_CreateAcls(rk, bindings.0.as_mut_ptr(), bindings.0.len(), options, queue),
            |result| {
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
            },
        )
    }
}

fn describe_blocking(admin: &Admin, on: Option<(Resource, &str)>, timeout: Duration) -> Result<Vec<Acl>, AclError> {
    let mut errstr = [0 as c_char; 512];
    let name = match on {
        Some((_, name)) => {
            Some(CString::new(name).map_err(|e| AclError::Invalid { acl: name.to_string(), reason: e.to_string() })?)
        }
        None => None,
    };
    let resource = on.map_or(rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY, |(resource, _)| resource_type(resource));
    // SAFETY: null name, principal and host mean "any"; the name outlives the call.
    let filter = unsafe {
        rd::rd_kafka_AclBindingFilter_new(
            resource,
            name.as_ref().map_or(std::ptr::null(), |name| name.as_ptr()),
            rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
            std::ptr::null(),
            std::ptr::null(),
            rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
            rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if filter.is_null() {
        // SAFETY: librdkafka wrote a NUL-terminated message.
        return Err(AclError::Invalid { acl: "any".into(), reason: unsafe { text(errstr.as_ptr()) } });
    }
    let filter = Bindings(vec![filter]);
    let describe = AdminRequest {
        name: "DescribeAcls",
        op: rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEACLS,
        result_of: rd::rd_kafka_event_DescribeAcls_result,
    };
    // SAFETY: the filter lives until after the call; the result's bindings are read
    // while it lives.
    unsafe {
        request(
            admin,
            describe,
            timeout,
            |rk, options, queue| rd::rd_kafka_DescribeAcls(rk, filter.0[0], options, queue),
            |result| {
                let mut count = 0;
                let found = rd::rd_kafka_DescribeAcls_result_acls(result, &mut count);
                Ok((0..count).filter_map(|i| acl_of(*found.add(i))).collect())
            },
        )
    }
}

fn delete_blocking(admin: &Admin, acls: &[Acl], timeout: Duration) -> Result<usize, AclError> {
    let mut filters = Bindings::new(acls, true)?;
    let delete = AdminRequest {
        name: "DeleteAcls",
        op: rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEACLS,
        result_of: rd::rd_kafka_event_DeleteAcls_result,
    };
    // SAFETY: the filters live until after the call (librdkafka copies them).
    unsafe {
        request(
            admin,
            delete,
            timeout,
            |rk, options, queue| rd::rd_kafka_DeleteAcls(rk, filters.0.as_mut_ptr(), filters.0.len(), options, queue),
            |result| {
                let mut count = 0;
                let responses = rd::rd_kafka_DeleteAcls_result_responses(result, &mut count);
                let mut deleted = 0;
                for i in 0..count {
                    let response = *responses.add(i);
                    let error = rd::rd_kafka_DeleteAcls_result_response_error(response);
                    if !error.is_null() {
                        let acl = acls.get(i).map(ToString::to_string).unwrap_or_default();
                        return Err(AclError::Refused { acl, reason: text(rd::rd_kafka_error_string(error)) });
                    }
                    let mut matching = 0;
                    rd::rd_kafka_DeleteAcls_result_response_matching_acls(response, &mut matching);
                    deleted += matching;
                }
                Ok(deleted)
            },
        )
    }
}

/// The [`Acl`] a described binding is, when this module can express it.
///
/// SAFETY: `binding` is a live binding of a DescribeAcls result.
unsafe fn acl_of(binding: *const rd::rd_kafka_AclBinding_t) -> Option<Acl> {
    use rd::rd_kafka_AclOperation_t as Op;
    use rd::rd_kafka_ResourcePatternType_t as Pat;
    use rd::rd_kafka_ResourceType_t as Res;
    if rd::rd_kafka_AclBinding_permission_type(binding) != rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW
        || text(rd::rd_kafka_AclBinding_host(binding)) != "*"
    {
        return None;
    }
    let resource = match rd::rd_kafka_AclBinding_restype(binding) {
        Res::RD_KAFKA_RESOURCE_TOPIC => Resource::Topic,
        Res::RD_KAFKA_RESOURCE_GROUP => Resource::Group,
        Res::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID => Resource::TransactionalId,
        _ => return None,
    };
    let pattern = match rd::rd_kafka_AclBinding_resource_pattern_type(binding) {
        Pat::RD_KAFKA_RESOURCE_PATTERN_LITERAL => Pattern::Literal,
        Pat::RD_KAFKA_RESOURCE_PATTERN_PREFIXED => Pattern::Prefixed,
        _ => return None,
    };
    let operation = match rd::rd_kafka_AclBinding_operation(binding) {
        Op::RD_KAFKA_ACL_OPERATION_READ => Operation::Read,
        Op::RD_KAFKA_ACL_OPERATION_WRITE => Operation::Write,
        Op::RD_KAFKA_ACL_OPERATION_DESCRIBE => Operation::Describe,
        _ => return None,
    };
    Some(Acl {
        principal: text(rd::rd_kafka_AclBinding_principal(binding)),
        resource,
        pattern,
        name: text(rd::rd_kafka_AclBinding_name(binding)),
        operation,
    })
}

/// A binding for `acl`, or (`filter`) a filter matching exactly it.
fn binding(acl: &Acl, filter: bool) -> Result<*mut rd::rd_kafka_AclBinding_t, AclError> {
    let invalid = |reason: String| AclError::Invalid { acl: acl.to_string(), reason };
    let name = CString::new(acl.name.as_str()).map_err(|e| invalid(e.to_string()))?;
    let principal = CString::new(acl.principal.as_str()).map_err(|e| invalid(e.to_string()))?;
    let host = CString::new("*").expect("no NUL");
    let resource = resource_type(acl.resource);
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
    let new = if filter { rd::rd_kafka_AclBindingFilter_new } else { rd::rd_kafka_AclBinding_new };
    let binding = unsafe {
        new(
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

fn resource_type(resource: Resource) -> rd::rd_kafka_ResourceType_t {
    match resource {
        Resource::Topic => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
        Resource::Group => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_GROUP,
        Resource::TransactionalId => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
    }
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
