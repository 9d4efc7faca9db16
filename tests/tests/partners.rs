//! Partners on the same log: firstcome's records and clients against what the
//! teams around it already run — Kafka's Java client and its partitioner,
//! every compression codec a producer may pick, records written with an
//! evolved schema, a JVM partner using the registry's own serde, and the
//! registry's one writer. Real broker, real registry, real JVM; each test
//! isolates itself with its own topic prefix.

mod partners {
    pub mod compression;
    pub mod governance;
    pub mod hosted;
    pub mod java;
    pub mod java_partner;
    pub mod partitioning;
}
