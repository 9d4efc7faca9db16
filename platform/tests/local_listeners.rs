//! The default environment, local, accepts the public development secrets;
//! a service started without any environment configured must not listen
//! where others can reach it. In local every HTTP listener binds loopback
//! only, unless the environment was named on purpose.
//!
//! Run: `cargo test -p platform --test local_listeners` (no service needed).

use platform::settings::{Credentials, Environment, HttpSettings, Principal, ServiceSettings};
use serde::{Deserialize, Serialize};

/// A service's settings with two listeners, like ingest's API and ops ports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Service {
    environment: Environment,
    http: HttpSettings,
    ops: HttpSettings,
}

impl ServiceSettings for Service {
    const PRINCIPAL: Principal = Principal::INGEST;

    fn environment(&self) -> Environment {
        self.environment
    }

    fn credentials(&mut self) -> Credentials<'_> {
        Credentials::default()
    }
}

fn service(environment: Environment, http: &str, ops: &str) -> Service {
    Service {
        environment,
        http: HttpSettings { host: http.into(), port: 8080 },
        ops: HttpSettings { host: ops.into(), port: 9100 },
    }
}

#[test]
fn local_by_default_refuses_a_listener_on_every_interface() {
    for any in ["0.0.0.0", "::", "[::]", "10.1.2.3", "example.org"] {
        let error = service(Environment::Local, any, "127.0.0.1").check_listeners(false).expect_err(any);
        assert!(error.to_string().contains("http.host"), "{error}");
        let error = service(Environment::Local, "127.0.0.1", any).check_listeners(false).expect_err(any);
        assert!(error.to_string().contains("ops.host"), "{error}");
    }
}

#[test]
fn local_by_default_binds_loopback() {
    for loopback in ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"] {
        assert!(service(Environment::Local, loopback, loopback).check_listeners(false).is_ok(), "{loopback}");
    }
}

#[test]
fn a_named_environment_may_listen_anywhere() {
    // Local named on purpose (the container demo) or production.
    assert!(service(Environment::Local, "0.0.0.0", "::").check_listeners(true).is_ok());
    assert!(service(Environment::Production, "0.0.0.0", "::").check_listeners(true).is_ok());
}

#[test]
fn the_start_check_refuses_it_when_no_environment_is_configured() {
    // What every service runs at start; this process names no environment
    // (unless whoever runs the tests set one, which makes the case moot).
    if std::env::var_os("FIRSTCOME_ENVIRONMENT").is_some() || std::env::var_os("FIRSTCOME_CONFIG").is_some() {
        return;
    }
    assert!(service(Environment::Local, "0.0.0.0", "127.0.0.1").check_credentials().is_err());
    assert!(service(Environment::Local, "127.0.0.1", "127.0.0.1").check_credentials().is_ok());
}
