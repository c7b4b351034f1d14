//! SMART scopes: what a client asks for, what the launcher grants, and how a
//! grant is written into the access token for hfs.
//!
//! Clients may ask in SMART v1 syntax (`patient/Observation.read`,
//! `user/*.write`) or v2 (`patient/Observation.rs`, SMART App Launch 2.2.0
//! §Scopes). The token response's `scope` echoes the grant in the syntax the
//! client used, but hfs understands v2 only, so the access token's `scope`
//! claim carries the v2 equivalent of every granted resource scope
//! (`.read` → `.rs`, `.write` → `.cud`, `.*` → `.cruds`).
//!
//! The grant is smaller than the request when the launch says so: `system/`
//! scopes only for Backend Services, `patient/` scopes only with a patient
//! in context, `launch` only in an EHR launch, `launch/patient` only in a
//! standalone one, and the simulations take away writes (downgraded grant)
//! or v2 scopes (a v1-only server). Unknown scopes are left out, as a real
//! server does.

use std::fmt;

/// `c r u d s` as bits, in the SMART v2 order.
const CREATE: u8 = 1;
const READ: u8 = 2;
const UPDATE: u8 = 4;
const DELETE: u8 = 8;
const SEARCH: u8 = 16;
const WRITES: u8 = CREATE | UPDATE | DELETE;
const LETTERS: [(char, u8); 5] = [
    ('c', CREATE),
    ('r', READ),
    ('u', UPDATE),
    ('d', DELETE),
    ('s', SEARCH),
];

/// Scopes that are not about resources and that the launcher knows.
const KNOWN_OTHER: &[&str] = &[
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
];

/// Whose data a resource scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compartment {
    Patient,
    User,
    System,
}

impl Compartment {
    fn as_str(self) -> &'static str {
        match self {
            Compartment::Patient => "patient",
            Compartment::User => "user",
            Compartment::System => "system",
        }
    }
}

/// The permission part of a resource scope, in the syntax it was asked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permissions {
    /// v1 `.read`
    V1Read,
    /// v1 `.write`
    V1Write,
    /// v1 `.*`
    V1All,
    /// v2 letters, as bits
    V2(u8),
}

impl Permissions {
    fn bits(self) -> u8 {
        match self {
            Permissions::V1Read => READ | SEARCH,
            Permissions::V1Write => WRITES,
            Permissions::V1All => READ | SEARCH | WRITES,
            Permissions::V2(bits) => bits,
        }
    }

    fn v2_letters(bits: u8) -> String {
        LETTERS
            .iter()
            .filter(|(_, b)| bits & b != 0)
            .map(|(c, _)| *c)
            .collect()
    }

    /// Without create, update and delete; `None` when nothing is left.
    fn without_writes(self) -> Option<Permissions> {
        match self {
            Permissions::V1Read => Some(Permissions::V1Read),
            Permissions::V1Write => None,
            Permissions::V1All => Some(Permissions::V1Read),
            Permissions::V2(bits) => {
                let left = bits & !WRITES;
                (left != 0).then_some(Permissions::V2(left))
            }
        }
    }
}

/// `patient/Observation.rs?category=…`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    pub compartment: Compartment,
    /// A resource type, or `*`.
    pub resource: String,
    pub permissions: Permissions,
    /// A v2 granular query (`?category=…`), kept verbatim.
    pub query: Option<String>,
}

impl ResourceScope {
    fn parse(s: &str) -> Option<ResourceScope> {
        let (compartment, rest) = s.split_once('/')?;
        let compartment = match compartment {
            "patient" => Compartment::Patient,
            "user" => Compartment::User,
            "system" => Compartment::System,
            _ => return None,
        };
        let (resource, perms) = rest.split_once('.')?;
        let valid_type = resource == "*"
            || (resource.starts_with(|c: char| c.is_ascii_uppercase())
                && resource.chars().all(|c| c.is_ascii_alphabetic()));
        if !valid_type {
            return None;
        }
        let (perms, query) = match perms.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (perms, None),
        };
        let permissions = match perms {
            "read" if query.is_none() => Permissions::V1Read,
            "write" if query.is_none() => Permissions::V1Write,
            "*" if query.is_none() => Permissions::V1All,
            letters => {
                let mut bits = 0u8;
                for c in letters.chars() {
                    let (_, bit) = LETTERS.iter().find(|(l, _)| *l == c)?;
                    if bits & bit != 0 {
                        return None;
                    }
                    bits |= bit;
                }
                if bits == 0 {
                    return None;
                }
                Permissions::V2(bits)
            }
        };
        Some(ResourceScope {
            compartment,
            resource: resource.to_string(),
            permissions,
            query,
        })
    }

    fn is_v1(&self) -> bool {
        !matches!(self.permissions, Permissions::V2(_))
    }

    /// The v2 form hfs understands.
    fn v2(&self) -> String {
        let mut s = format!(
            "{}/{}.{}",
            self.compartment.as_str(),
            self.resource,
            Permissions::v2_letters(self.permissions.bits())
        );
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        s
    }
}

impl fmt::Display for ResourceScope {
    /// The syntax the client asked in (v2 letters in canonical order).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let perms = match self.permissions {
            Permissions::V1Read => "read".to_string(),
            Permissions::V1Write => "write".to_string(),
            Permissions::V1All => "*".to_string(),
            Permissions::V2(bits) => Permissions::v2_letters(bits),
        };
        write!(
            f,
            "{}/{}.{}",
            self.compartment.as_str(),
            self.resource,
            perms
        )?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

/// One requested or granted scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Resource(ResourceScope),
    /// `openid`, `fhirUser`, `launch`, `offline_access`, …
    Other(String),
    /// A scope the launcher does not know; never granted.
    Unknown(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Resource(r) => r.fmt(f),
            Scope::Other(s) | Scope::Unknown(s) => f.write_str(s),
        }
    }
}

/// A space-separated scope string, parsed; duplicates are dropped.
pub fn parse(scope: &str) -> Vec<Scope> {
    let mut out: Vec<Scope> = Vec::new();
    for s in scope.split_whitespace() {
        let parsed = if KNOWN_OTHER.contains(&s) {
            Scope::Other(s.to_string())
        } else {
            ResourceScope::parse(s)
                .map(Scope::Resource)
                .unwrap_or_else(|| Scope::Unknown(s.to_string()))
        };
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    out
}

/// How the client arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchKind {
    /// EHR launch (`launch` parameter).
    Ehr,
    /// Standalone launch (the picker).
    Standalone,
    /// SMART Backend Services (`client_credentials`).
    Backend,
}

/// What shapes a grant besides the request.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub kind: LaunchKind,
    /// A patient is in context (needed by `patient/` scopes).
    pub has_patient: bool,
    /// Simulation: no create, update, delete, nor `offline_access`.
    pub downgrade: bool,
    /// Simulation: a server that knows only v1 scopes ignores v2 ones.
    pub v1_only: bool,
}

/// The granted scopes, in the syntax they were asked in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    scopes: Vec<Scope>,
}

impl Grant {
    /// Grant what `requested` may have under `policy`.
    pub fn new(requested: &[Scope], policy: Policy) -> Grant {
        let mut scopes = Vec::new();
        for scope in requested {
            let granted = match scope {
                Scope::Unknown(_) => None,
                Scope::Other(s) => {
                    let allowed = match s.as_str() {
                        "launch" => policy.kind == LaunchKind::Ehr,
                        "launch/patient" | "launch/encounter" => {
                            policy.kind == LaunchKind::Standalone
                        }
                        "offline_access" => policy.kind != LaunchKind::Backend && !policy.downgrade,
                        _ => policy.kind != LaunchKind::Backend,
                    };
                    allowed.then(|| scope.clone())
                }
                Scope::Resource(r) => {
                    // A v1-only server does not know v2 scopes.
                    let understood = r.is_v1() || !policy.v1_only;
                    let allowed = understood
                        && match r.compartment {
                            Compartment::System => policy.kind == LaunchKind::Backend,
                            Compartment::User => policy.kind != LaunchKind::Backend,
                            Compartment::Patient => {
                                policy.kind != LaunchKind::Backend && policy.has_patient
                            }
                        };
                    if !allowed {
                        None
                    } else if policy.downgrade {
                        r.permissions.without_writes().map(|permissions| {
                            Scope::Resource(ResourceScope {
                                permissions,
                                ..r.clone()
                            })
                        })
                    } else {
                        Some(scope.clone())
                    }
                }
            };
            if let Some(g) = granted
                && !scopes.contains(&g)
            {
                scopes.push(g);
            }
        }
        Grant { scopes }
    }

    /// The grant narrowed to `requested` (a refresh may ask for less); `None`
    /// when `requested` holds a scope that was not granted.
    pub fn narrowed(&self, requested: &[Scope]) -> Option<Grant> {
        requested
            .iter()
            .all(|s| self.scopes.contains(s))
            .then(|| Grant {
                scopes: requested.to_vec(),
            })
    }

    pub fn has(&self, scope: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| matches!(s, Scope::Other(o) if o == scope))
    }

    pub fn has_resource_scope(&self) -> bool {
        self.scopes.iter().any(|s| matches!(s, Scope::Resource(_)))
    }

    /// A refresh token comes with `offline_access` or `online_access`.
    pub fn wants_refresh(&self) -> bool {
        self.has("offline_access") || self.has("online_access")
    }

    /// The token response's `scope`: the grant as asked.
    pub fn response_scope(&self) -> String {
        self.scopes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The access token's `scope` claim: resource scopes in v2 syntax (the
    /// only one hfs enforces), the others verbatim.
    pub fn claim_scope(&self) -> String {
        self.scopes
            .iter()
            .map(|s| match s {
                Scope::Resource(r) => r.v2(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The v2 form of a scope string, for tokens the launcher makes for itself.
pub fn claim_form(scope: &str) -> String {
    parse(scope)
        .iter()
        .map(|s| match s {
            Scope::Resource(r) => r.v2(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(kind: LaunchKind) -> Policy {
        Policy {
            kind,
            has_patient: true,
            downgrade: false,
            v1_only: false,
        }
    }

    fn grant(scope: &str, policy: Policy) -> Grant {
        Grant::new(&parse(scope), policy)
    }

    #[test]
    fn v1_scopes_are_granted_as_asked_and_claimed_in_v2() {
        let g = grant(
            "launch openid fhirUser patient/Patient.read user/*.write patient/Observation.*",
            policy(LaunchKind::Ehr),
        );
        assert_eq!(
            g.response_scope(),
            "launch openid fhirUser patient/Patient.read user/*.write patient/Observation.*"
        );
        assert_eq!(
            g.claim_scope(),
            "launch openid fhirUser patient/Patient.rs user/*.cud patient/Observation.cruds"
        );
    }

    #[test]
    fn v2_letters_are_canonical_and_queries_kept() {
        let g = grant(
            "user/Task.sr patient/Observation.rs?category=laboratory",
            policy(LaunchKind::Ehr),
        );
        assert_eq!(
            g.response_scope(),
            "user/Task.rs patient/Observation.rs?category=laboratory"
        );
        assert_eq!(
            g.claim_scope(),
            "user/Task.rs patient/Observation.rs?category=laboratory"
        );
    }

    #[test]
    fn malformed_and_unknown_scopes_are_not_granted() {
        for bad in [
            "patient/Patient.rr",
            "patient/Patient.x",
            "patient/Patient",
            "patient/patient.rs",
            "clinic/Patient.rs",
            "patient/Patient.",
            "email",
            "patient/Patient.read?x=1",
        ] {
            assert_eq!(
                grant(bad, policy(LaunchKind::Ehr)),
                Grant::default(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_launch_kind_decides_compartments_and_launch_scopes() {
        let asked = "launch launch/patient openid patient/*.rs user/*.rs system/*.rs";
        assert_eq!(
            grant(asked, policy(LaunchKind::Ehr)).response_scope(),
            "launch openid patient/*.rs user/*.rs"
        );
        assert_eq!(
            grant(asked, policy(LaunchKind::Standalone)).response_scope(),
            "launch/patient openid patient/*.rs user/*.rs"
        );
        assert_eq!(
            grant(asked, policy(LaunchKind::Backend)).response_scope(),
            "system/*.rs"
        );
        let no_patient = Policy {
            has_patient: false,
            ..policy(LaunchKind::Standalone)
        };
        assert_eq!(
            grant(asked, no_patient).response_scope(),
            "launch/patient openid user/*.rs"
        );
    }

    #[test]
    fn downgrade_drops_writes_and_offline_access() {
        let p = Policy {
            downgrade: true,
            ..policy(LaunchKind::Ehr)
        };
        let g = grant(
            "launch offline_access user/Task.cruds user/Condition.cu patient/*.* patient/Task.write user/Patient.read",
            p,
        );
        assert_eq!(
            g.response_scope(),
            "launch user/Task.rs patient/*.read user/Patient.read"
        );
        assert!(!g.wants_refresh());
    }

    #[test]
    fn v1_only_ignores_v2_scopes() {
        let p = Policy {
            v1_only: true,
            ..policy(LaunchKind::Ehr)
        };
        assert_eq!(
            grant("launch patient/Patient.read patient/Observation.rs", p).response_scope(),
            "launch patient/Patient.read"
        );
    }

    #[test]
    fn a_refresh_may_narrow_but_not_widen() {
        let g = grant(
            "launch offline_access user/Patient.rs user/Task.rs",
            policy(LaunchKind::Ehr),
        );
        let narrow = g
            .narrowed(&parse("user/Patient.rs offline_access"))
            .unwrap();
        assert_eq!(narrow.response_scope(), "user/Patient.rs offline_access");
        assert!(g.narrowed(&parse("user/Patient.cruds")).is_none());
    }

    #[test]
    fn claim_form_translates_v1() {
        assert_eq!(
            claim_form("system/*.read system/Patient.cruds"),
            "system/*.rs system/Patient.cruds"
        );
    }
}
