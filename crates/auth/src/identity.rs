//! Who is calling.

use crate::scope::{Scopes, Target};

/// An authenticated caller (or the anonymous one) and what it may use.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The key's id for an API key, the `sub` claim for a JWT,
    /// `"anonymous"` otherwise.
    pub subject: String,
    pub kind: IdentityKind,
    pub scopes: Scopes,
}

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityKind {
    ApiKey { name: String },
    Jwt { issuer: String },
    Anonymous,
}

impl Identity {
    /// The identity of a request without credentials, where anonymous
    /// access is allowed; `scopes` is what the operator grants it.
    pub fn anonymous(scopes: Scopes) -> Self {
        Identity {
            subject: "anonymous".to_owned(),
            kind: IdentityKind::Anonymous,
            scopes,
        }
    }

    /// The identity behind an API key found in the store.
    pub fn api_key(id: impl Into<String>, name: impl Into<String>, scopes: Scopes) -> Self {
        Identity {
            subject: id.into(),
            kind: IdentityKind::ApiKey { name: name.into() },
            scopes,
        }
    }

    /// Returns a stable key naming the principal, for binding sessions and
    /// for audit records: the same `sub` from two issuers, or a key id equal
    /// to a JWT subject, are different principals.
    pub fn principal(&self) -> String {
        match &self.kind {
            IdentityKind::ApiKey { .. } => format!("key:{}", self.subject),
            IdentityKind::Jwt { issuer } => format!("jwt:{issuer}#{}", self.subject),
            IdentityKind::Anonymous => "anonymous".to_owned(),
        }
    }

    /// Whether two identities are the same principal (their scopes may
    /// differ, e.g. a refreshed token).
    pub fn same_principal(&self, other: &Identity) -> bool {
        self.kind == other.kind && self.subject == other.subject
    }

    /// Whether this identity may use `target`.
    pub fn allows(&self, target: Target<'_>) -> bool {
        self.scopes.allows(target)
    }

    /// Whether this identity may use the admin API.
    pub fn is_admin(&self) -> bool {
        self.scopes.is_admin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_differ_by_kind_and_issuer() {
        let s = Scopes::default();
        let key = Identity::api_key("alice", "ci", s.clone());
        let jwt_a = Identity {
            subject: "alice".into(),
            kind: IdentityKind::Jwt {
                issuer: "https://a".into(),
            },
            scopes: s.clone(),
        };
        let jwt_b = Identity {
            kind: IdentityKind::Jwt {
                issuer: "https://b".into(),
            },
            ..jwt_a.clone()
        };
        assert!(!key.same_principal(&jwt_a));
        assert!(!jwt_a.same_principal(&jwt_b));
        assert!(jwt_a.same_principal(&jwt_a.clone()));
        let principals = [key.principal(), jwt_a.principal(), jwt_b.principal()];
        assert_eq!(
            principals,
            ["key:alice", "jwt:https://a#alice", "jwt:https://b#alice"]
        );
        assert!(!Identity::anonymous(s).same_principal(&key));
    }
}
