//! End-to-end tests against the real local stack (`stack/bin/stack up`):
//! Kafka, the schema registry, PostgreSQL and Redis. No mocks; the gift
//! provider is its documented simulator. Every test isolates itself with a
//! topic/group prefix, a fresh database and a fresh event id.

mod helpers;
mod member_replica;
mod outage;
mod pipeline;
mod pipeline_harness;
mod redis_failover;
mod registry;
