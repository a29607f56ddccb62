//! ACLs and the authorizer, in Kafka's model (KIP-290 patterns, StandardAuthorizer's rules):
//! a binding allows or denies a principal an operation on resources named literally or by
//! prefix, from a host. With `authorizer.class.name` set, every Kafka request is checked:
//! `super.users` may do everything, a matching DENY wins over any ALLOW, DESCRIBE is implied by
//! READ, WRITE, DELETE or ALTER and DESCRIBE_CONFIGS by ALTER_CONFIGS, and a resource no ACL
//! names is allowed only with `allow.everyone.if.no.acl.found`. Bindings are kept in the store's
//! security records (`acls`), durable before CreateAcls/DeleteAcls answer, and in memory.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use kafkabox_storage::Store;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use crate::config::Config;

/// The principal of a client that did not authenticate (PLAINTEXT, SSL without a client
/// certificate), as Kafka names it.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

const KEY: &[u8] = b"acls";

/// At most this many bindings are stored.
pub const MAX_ACLS: usize = 10_000;

/// The cluster resource's only name.
pub const CLUSTER_NAME: &str = "kafka-cluster";

macro_rules! kafka_enum {
    ($name:ident { $($variant:ident = $code:expr, $text:expr;)* }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),* }
        impl $name {
            /// From Kafka's wire code.
            pub fn from_code(c: i8) -> Option<$name> {
                match c { $($code => Some($name::$variant),)* _ => None }
            }
            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code),* }
            }
            /// Kafka's name (`TOPIC`, `PREFIXED`, `READ` ...).
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }
    };
}

kafka_enum!(ResourceType {
    Any = 1, "ANY";
    Topic = 2, "TOPIC";
    Group = 3, "GROUP";
    Cluster = 4, "CLUSTER";
    TransactionalId = 5, "TRANSACTIONAL_ID";
    DelegationToken = 6, "DELEGATION_TOKEN";
    User = 7, "USER";
});

kafka_enum!(PatternType {
    Any = 1, "ANY";
    Match = 2, "MATCH";
    Literal = 3, "LITERAL";
    Prefixed = 4, "PREFIXED";
});

kafka_enum!(Operation {
    Any = 1, "ANY";
    All = 2, "ALL";
    Read = 3, "READ";
    Write = 4, "WRITE";
    Create = 5, "CREATE";
    Delete = 6, "DELETE";
    Alter = 7, "ALTER";
    Describe = 8, "DESCRIBE";
    ClusterAction = 9, "CLUSTER_ACTION";
    DescribeConfigs = 10, "DESCRIBE_CONFIGS";
    AlterConfigs = 11, "ALTER_CONFIGS";
    IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    CreateTokens = 13, "CREATE_TOKENS";
    DescribeTokens = 14, "DESCRIBE_TOKENS";
});

kafka_enum!(Permission {
    Any = 1, "ANY";
    Deny = 2, "DENY";
    Allow = 3, "ALLOW";
});

/// One ACL binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern: PatternType,
    /// `User:NAME`, or `User:*` for everyone.
    pub principal: String,
    /// A client address, or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// A filter over bindings (DescribeAcls, DeleteAcls): `None` and the `Any` values match all.
#[derive(Debug, Clone)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclFilter {
    pub fn matches(&self, a: &Acl) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != a.resource_type {
            return false;
        }
        let name_ok = match (&self.resource_name, self.pattern) {
            (None, PatternType::Any | PatternType::Match) => true,
            (None, p) => p == a.pattern,
            (Some(n), PatternType::Any) => *n == a.resource_name,
            (Some(n), PatternType::Match) => pattern_applies(a, n),
            (Some(n), p) => p == a.pattern && *n == a.resource_name,
        };
        name_ok
            && self.principal.as_ref().is_none_or(|p| *p == a.principal)
            && self.host.as_ref().is_none_or(|h| *h == a.host)
            && (self.operation == Operation::Any || self.operation == a.operation)
            && (self.permission == Permission::Any || self.permission == a.permission)
    }

    /// Kafka's checks of a filter (DescribeAcls, DeleteAcls).
    pub fn validate(&self) -> Result<()> {
        if self.pattern == PatternType::Match && self.resource_name.is_none() {
            // Kafka allows it and matches everything; nothing to refuse.
        }
        Ok(())
    }
}

/// Whether binding `a`'s resource pattern covers the resource named `name`.
fn pattern_applies(a: &Acl, name: &str) -> bool {
    match a.pattern {
        PatternType::Literal => a.resource_name == name || a.resource_name == "*",
        PatternType::Prefixed => name.starts_with(&a.resource_name),
        _ => false,
    }
}

impl Acl {
    /// Kafka's checks of a new binding (CreateAcls).
    pub fn validate(&self) -> Result<()> {
        if matches!(self.resource_type, ResourceType::Any) {
            return Err(Error::InvalidRequest(
                "an ACL needs a resource type (not ANY)".into(),
            ));
        }
        if !matches!(self.pattern, PatternType::Literal | PatternType::Prefixed) {
            return Err(Error::InvalidRequest(
                "an ACL's pattern type must be LITERAL or PREFIXED".into(),
            ));
        }
        if matches!(self.operation, Operation::Any) {
            return Err(Error::InvalidRequest(
                "an ACL needs an operation (not ANY)".into(),
            ));
        }
        if !matches!(self.permission, Permission::Allow | Permission::Deny) {
            return Err(Error::InvalidRequest(
                "an ACL's permission must be ALLOW or DENY".into(),
            ));
        }
        match self.principal.split_once(':') {
            Some(("User", n)) if !n.is_empty() => {}
            _ => {
                return Err(Error::InvalidRequest(format!(
                    "ACL principal '{}' is not of the form User:NAME (or User:*)",
                    super::truncate(&self.principal, 256)
                )))
            }
        }
        if self.resource_name.is_empty() {
            return Err(Error::InvalidRequest("an ACL needs a resource name".into()));
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(Error::InvalidRequest(format!(
                "the cluster resource is named {CLUSTER_NAME}"
            )));
        }
        if self.host.is_empty() {
            return Err(Error::InvalidRequest("an ACL needs a host (or *)".into()));
        }
        if self.resource_name.len() + self.principal.len() + self.host.len() > 4096 {
            return Err(Error::InvalidRequest("ACL fields are too long".into()));
        }
        Ok(())
    }
}

/// The authorizer: the settings and the bindings, in memory.
#[derive(Debug)]
pub struct Authorizer {
    enabled: bool,
    super_users: Vec<String>,
    allow_if_no_acl: bool,
    store: Store,
    acls: RwLock<Arc<Vec<Acl>>>,
}

impl Authorizer {
    /// Reads the stored bindings.
    pub fn open(store: Store, config: &Config) -> Result<Authorizer> {
        let acls = load(&store)?;
        Ok(Authorizer {
            enabled: config.authorizer,
            super_users: config.super_users.clone(),
            allow_if_no_acl: config.allow_if_no_acl,
            store,
            acls: RwLock::new(Arc::new(acls)),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn snapshot(&self) -> Arc<Vec<Acl>> {
        match self.acls.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Whether `principal` connecting from `host` may do `op` on the resource.
    pub fn authorize(
        &self,
        principal: &str,
        host: IpAddr,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let acls = self.snapshot();
        let host = host.to_string();
        let mut any_for_resource = false;
        let mut allowed = false;
        for a in acls.iter() {
            if a.resource_type != resource_type || !pattern_applies(a, name) {
                continue;
            }
            any_for_resource = true;
            if !(a.principal == principal || a.principal == "User:*") {
                continue;
            }
            if !(a.host == "*" || a.host == host) {
                continue;
            }
            match a.permission {
                Permission::Deny if a.operation == op || a.operation == Operation::All => {
                    return false
                }
                Permission::Allow if implies(a.operation, op) => allowed = true,
                _ => {}
            }
        }
        allowed || (!any_for_resource && self.allow_if_no_acl)
    }

    /// Whether `principal` may `op` on some resource of `resource_type` (Kafka's
    /// authorizeByResourceType: an ALLOW that no literal DENY cancels), e.g. WRITE on any topic
    /// for an idempotent producer's InitProducerId.
    pub fn authorize_any(
        &self,
        principal: &str,
        host: IpAddr,
        op: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.enabled || self.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let host = host.to_string();
        let acls = self.snapshot();
        let applies = |a: &&Acl| {
            a.resource_type == resource_type
                && (a.principal == principal || a.principal == "User:*")
                && (a.host == "*" || a.host == host)
        };
        let denied_everywhere = acls.iter().filter(applies).any(|a| {
            a.permission == Permission::Deny
                && (a.operation == op || a.operation == Operation::All)
                && a.pattern == PatternType::Literal
                && a.resource_name == "*"
        });
        if denied_everywhere {
            return false;
        }
        acls.iter()
            .filter(applies)
            .any(|a| a.permission == Permission::Allow && implies(a.operation, op))
            || (self.allow_if_no_acl && !acls.iter().any(|a| a.resource_type == resource_type))
    }

    /// The bindings matching `filter`.
    pub fn describe(&self, filter: &AclFilter) -> Result<Vec<Acl>> {
        if !self.enabled {
            return Err(disabled());
        }
        Ok(self
            .snapshot()
            .iter()
            .filter(|a| filter.matches(a))
            .cloned()
            .collect())
    }

    /// Adds bindings (each checked; an existing one is kept once). Durable when this returns.
    /// One result per binding, in order.
    pub fn create(&self, new: Vec<Acl>) -> Result<Vec<Result<()>>> {
        if !self.enabled {
            return Err(disabled());
        }
        let mut guard = self
            .acls
            .write()
            .map_err(|_| Error::Internal("ACL lock".into()))?;
        let mut next: Vec<Acl> = guard.as_ref().clone();
        let mut results = Vec::with_capacity(new.len());
        for a in new {
            if let Err(e) = a.validate() {
                results.push(Err(e));
                continue;
            }
            if next.contains(&a) {
                results.push(Ok(()));
                continue;
            }
            if next.len() >= MAX_ACLS {
                results.push(Err(Error::PolicyViolation(format!(
                    "at most {MAX_ACLS} ACLs may be stored"
                ))));
                continue;
            }
            next.push(a);
            results.push(Ok(()));
        }
        if next.len() != guard.len() {
            save(&self.store, &next)?;
            *guard = Arc::new(next);
        }
        Ok(results)
    }

    /// Removes the bindings matching each filter; per filter, what it removed. Durable when
    /// this returns.
    pub fn delete(&self, filters: &[AclFilter]) -> Result<Vec<Vec<Acl>>> {
        if !self.enabled {
            return Err(disabled());
        }
        let mut guard = self
            .acls
            .write()
            .map_err(|_| Error::Internal("ACL lock".into()))?;
        let mut removed = vec![Vec::new(); filters.len()];
        let mut kept = Vec::with_capacity(guard.len());
        for a in guard.iter() {
            match filters.iter().position(|f| f.matches(a)) {
                Some(i) => {
                    removed[i].push(a.clone());
                    for (j, f) in filters.iter().enumerate().skip(i + 1) {
                        if f.matches(a) {
                            removed[j].push(a.clone());
                        }
                    }
                }
                None => kept.push(a.clone()),
            }
        }
        if kept.len() != guard.len() {
            save(&self.store, &kept)?;
            *guard = Arc::new(kept);
        }
        Ok(removed)
    }
}

/// Whether an ALLOW of `granted` allows `wanted` (Kafka's implied operations).
fn implies(granted: Operation, wanted: Operation) -> bool {
    granted == wanted
        || granted == Operation::All
        || (wanted == Operation::Describe
            && matches!(
                granted,
                Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
            ))
        || (wanted == Operation::DescribeConfigs && granted == Operation::AlterConfigs)
}

fn disabled() -> Error {
    Error::SecurityDisabled(
        "No authorizer is configured on the broker (set authorizer.class.name to enforce ACLs)"
            .into(),
    )
}

fn load(store: &Store) -> Result<Vec<Acl>> {
    match store
        .security_records(KEY)?
        .into_iter()
        .find(|(k, _)| k == KEY)
    {
        None => Ok(Vec::new()),
        Some((_, v)) => serde_json::from_slice(&v)
            .map_err(|e| Error::Internal(format!("stored ACLs cannot be read: {e}"))),
    }
}

fn save(store: &Store, acls: &[Acl]) -> Result<()> {
    let bytes = serde_json::to_vec(acls).map_err(|e| Error::Internal(e.to_string()))?;
    store.put_security_records(&[(KEY.to_vec(), Some(bytes))])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: Operation,
        perm: Permission,
    ) -> Acl {
        Acl {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    #[test]
    fn kafkas_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(kafkabox_storage::StoreConfig::new(dir.path())).unwrap();
        let config = Config {
            authorizer: true,
            super_users: vec!["User:root".into()],
            ..Default::default()
        };
        let a = Authorizer::open(store.clone(), &config).unwrap();
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let t = ResourceType::Topic;
        assert!(!a.authorize("User:alice", host, Operation::Read, t, "orders"));
        assert!(a.authorize("User:root", host, Operation::Read, t, "orders"));
        a.create(vec![
            acl(
                "ord",
                PatternType::Prefixed,
                "User:alice",
                Operation::Read,
                Permission::Allow,
            ),
            acl(
                "orders-secret",
                PatternType::Literal,
                "User:*",
                Operation::All,
                Permission::Deny,
            ),
            acl(
                "*",
                PatternType::Literal,
                "User:bob",
                Operation::Write,
                Permission::Allow,
            ),
        ])
        .unwrap()
        .into_iter()
        .for_each(|r| r.unwrap());
        assert!(a.authorize("User:alice", host, Operation::Read, t, "orders"));
        assert!(a.authorize("User:alice", host, Operation::Describe, t, "orders"));
        assert!(!a.authorize("User:alice", host, Operation::Write, t, "orders"));
        assert!(!a.authorize("User:alice", host, Operation::Read, t, "orders-secret"));
        assert!(!a.authorize("User:alice", host, Operation::Read, t, "payments"));
        assert!(a.authorize("User:bob", host, Operation::Write, t, "payments"));
        assert!(a.authorize_any("User:bob", host, Operation::Write, t));
        assert!(!a.authorize_any("User:alice", host, Operation::Write, t));
        // Stored: a new authorizer over the same store sees them.
        let b = Authorizer::open(store.clone(), &config).unwrap();
        assert!(b.authorize("User:alice", host, Operation::Read, t, "orders"));
        let removed = b
            .delete(&[AclFilter {
                resource_type: ResourceType::Any,
                resource_name: None,
                pattern: PatternType::Any,
                principal: Some("User:alice".into()),
                host: None,
                operation: Operation::Any,
                permission: Permission::Any,
            }])
            .unwrap();
        assert_eq!(removed[0].len(), 1);
        assert!(!b.authorize("User:alice", host, Operation::Read, t, "orders"));
        let bad = acl(
            "x",
            PatternType::Any,
            "alice",
            Operation::Read,
            Permission::Allow,
        );
        assert!(b.create(vec![bad]).unwrap()[0].is_err());
    }
}
