//! Who a client is on the stack.

/// Who a client is on the stack: one identity per service, each with only
/// the rights it needs (least privilege). It names the service's PostgreSQL
/// role (`firstcome_<name>`, granted by `migrations/grants.sql`), its Redis
/// ACL user and its Kafka SCRAM user (`<name>`, whose ACLs
/// `platform::kafka::acl` derives from `schemas::topology`).
///
/// On the local stack every password is `firstcome_<name>` and each service
/// fills in its own when its settings name no user (so `stack env` exports
/// no credentials); outside local nothing is filled in and those passwords
/// are refused (`STACK_PASSWORDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Principal(&'static str);

impl Principal {
    pub const INGEST: Principal = Principal("ingest");
    pub const STOCK: Principal = Principal("stock");
    pub const RECORDER: Principal = Principal("recorder");
    pub const SENDER: Principal = Principal("sender");
    /// The operator's CLI and the test kit: the database owner (the only
    /// role that runs DDL), the Kafka and Redis administrator.
    pub const ADMIN: Principal = Principal("admin");
    /// Every principal, services first.
    pub const ALL: [Principal; 5] =
        [Principal::INGEST, Principal::STOCK, Principal::RECORDER, Principal::SENDER, Principal::ADMIN];

    /// The principal of a pipeline stage.
    pub const fn of(stage: schemas::topology::Stage) -> Principal {
        use schemas::topology::Stage;
        match stage {
            Stage::Ingest => Principal::INGEST,
            Stage::Stock => Principal::STOCK,
            Stage::Recording => Principal::RECORDER,
            Stage::Dispatch => Principal::SENDER,
        }
    }

    /// The Redis and Kafka user name.
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// The PostgreSQL role: `firstcome_<name>`; the admin is the owner, `firstcome`.
    pub fn database_role(self) -> String {
        match self {
            Principal::ADMIN => "firstcome".into(),
            _ => format!("firstcome_{}", self.0),
        }
    }

    /// The local stack's password of the Redis and Kafka user (public).
    pub fn local_password(self) -> String {
        format!("firstcome_{}", self.0)
    }

    /// The local stack's password of the PostgreSQL role (public).
    pub fn local_database_password(self) -> String {
        self.database_role()
    }
}
