//! librdkafka's ACL calls (`rd_kafka_CreateAcls`, `_DescribeAcls`,
//! `_DeleteAcls`), which rust-rdkafka does not wrap: the one place of
//! `unsafe` code for Kafka ACLs. Each call is blocking (its result is
//! polled); the module above runs them off the async workers.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

use super::{Acl, AclError, Operation, Pattern, Resource};

/// The admin client the calls are made through.
pub(super) type Admin = AdminClient<DefaultClientContext>;

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

pub(super) fn create_blocking(admin: &Admin, acls: &[Acl], timeout: Duration) -> Result<(), AclError> {
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

pub(super) fn describe_blocking(
    admin: &Admin,
    on: Option<(Resource, &str)>,
    timeout: Duration,
) -> Result<Vec<Acl>, AclError> {
    let mut errstr = [0 as c_char; 512];
    let name = match on {
        Some((_, name)) => {
            Some(CString::new(name).map_err(|e| AclError::Invalid { acl: name.to_string(), reason: e.to_string() })?)
        }
        None => None,
    };
    let resource =
        on.map_or(rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY, |(resource, _)| resource_type(resource));
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

pub(super) fn delete_blocking(admin: &Admin, acls: &[Acl], timeout: Duration) -> Result<usize, AclError> {
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
    if rd::rd_kafka_AclBinding_permission_type(binding)
        != rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW
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
