//! Who a client is on the stack: the one table of identities
//! ([`Principal::ALL`]). The other places that spell them, which cannot be
//! generated from it (the stack script, the Redis ACL file, the grants,
//! compose's roles), are tested against it below.

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

    /// The Redis ACL user, if the principal has one: the recorder and the
    /// sender never touch Redis.
    pub fn redis_user(self) -> Option<&'static str> {
        match self {
            Principal::RECORDER | Principal::SENDER => None,
            _ => Some(self.0),
        }
    }

    /// The Kafka SCRAM user (every principal has one).
    pub const fn kafka_user(self) -> &'static str {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A file of the repository, from the workspace root.
    fn repository_file(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The words of a bash array assignment `NAME=(a b c)` in `script`.
    fn bash_array(script: &str, name: &str) -> BTreeSet<String> {
        let prefix = format!("{name}=(");
        let line = script.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name} in the script"));
        line[prefix.len()..].trim_end_matches(')').split_whitespace().map(String::from).collect()
    }

    fn service_roles() -> BTreeSet<String> {
        Principal::ALL.iter().filter(|p| **p != Principal::ADMIN).map(|p| p.database_role()).collect()
    }

    #[test]
    fn the_stack_script_creates_exactly_the_principals() {
        let script = repository_file("stack/bin/stack");
        let kafka: BTreeSet<String> = Principal::ALL.iter().map(|p| p.kafka_user().to_string()).collect();
        assert_eq!(bash_array(&script, "KAFKA_SCRAM_USERS"), kafka, "the SCRAM users");
        assert_eq!(bash_array(&script, "PG_SERVICE_ROLES"), service_roles(), "the service roles");
        assert!(
            script.contains(&format!("\nPG_USER={}\n", Principal::ADMIN.database_role())),
            "the owner is the admin"
        );
        // Every login's local password is the one a service fills in.
        assert!(script.contains("password=firstcome_$user"), "SCRAM passwords are firstcome_<name>");
        assert_eq!(Principal::ADMIN.local_password(), "firstcome_admin");
        assert!(script.contains(&format!("REDIS_ADMIN_PASSWORD={}", Principal::ADMIN.local_password())));
    }

    #[test]
    fn the_redis_acl_file_has_a_user_per_principal_that_uses_redis() {
        // `default` (off), and the Sentinels' and replicas' own logins.
        const INFRASTRUCTURE: [&str; 3] = ["default", "sentinel", "replica"];
        let acl = repository_file("stack/redis/users.acl");
        let mut users = BTreeSet::new();
        for line in acl.lines().filter(|l| l.starts_with("user ")) {
            let mut words = line.split_whitespace().skip(1);
            let name = words.next().expect("a user name");
            if INFRASTRUCTURE.contains(&name) {
                continue;
            }
            let password = words.find_map(|w| w.strip_prefix('>')).unwrap_or_else(|| panic!("{name} has no password"));
            let principal = Principal::ALL.iter().find(|p| p.redis_user() == Some(name));
            let principal = principal.unwrap_or_else(|| panic!("users.acl: {name} is no principal's Redis user"));
            assert_eq!(password, principal.local_password(), "{name}'s local password");
            users.insert(name.to_string());
        }
        let expected: BTreeSet<String> =
            Principal::ALL.iter().filter_map(|p| p.redis_user()).map(String::from).collect();
        assert_eq!(users, expected);
    }

    #[test]
    fn the_grants_and_compose_name_exactly_the_service_roles() {
        let grants = repository_file("migrations/grants.sql");
        let connect = grants.lines().find(|l| l.contains("GRANT CONNECT ON DATABASE")).expect("the CONNECT grant");
        let granted: BTreeSet<String> = connect
            .split(" TO ")
            .nth(1)
            .expect("TO roles")
            .split(['\'', ','])
            .map(str::trim)
            .filter(|w| w.starts_with("firstcome_"))
            .map(String::from)
            .collect();
        assert_eq!(granted, service_roles(), "grants.sql lets each service role connect");
        let roles_in = |sql: &str| -> BTreeSet<String> {
            sql.lines()
                .filter_map(|l| l.strip_prefix("CREATE ROLE "))
                .filter_map(|l| l.split_whitespace().next())
                .map(String::from)
                .collect()
        };
        let compose = repository_file("compose/postgres/init.sql");
        // Beside them, the stack's other logins: the owner, the registry's, the replica's reader.
        let mut created = roles_in(&compose);
        for other in [Principal::ADMIN.database_role().as_str(), "firstcome_registry", "firstcome_reader"] {
            assert!(created.remove(other), "compose creates {other}");
        }
        assert_eq!(created, service_roles(), "compose creates each service role");
        for principal in Principal::ALL.iter().filter(|p| **p != Principal::ADMIN) {
            let role = principal.database_role();
            assert!(compose
                .contains(&format!("CREATE ROLE {role} LOGIN PASSWORD '{}'", principal.local_database_password())));
        }
    }
}
