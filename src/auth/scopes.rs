//! SMART scopes (App Launch 2.2.0 §Scopes and Launch Context): what
//! Passerelle asks for, in v2 or v1 syntax, and what a grant allows.
//!
//! v2: `user/Task.cruds`; v1: `user/Task.read` (= `rs`), `user/Task.write`
//! (= `cud`), `user/*.*`. A grant is parsed once; features the grant does not
//! allow are shown disabled with the reason, instead of failing later with a
//! 403 from the server.

use std::collections::BTreeSet;

/// `patient/`, `user/` or `system/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Context {
    Patient,
    User,
    System,
}

/// One resource-level permission.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub context: Context,
    /// A resource type or `*`.
    pub resource: String,
    /// Subset of `c r u d s`, in that order.
    pub letters: String,
}

/// A parsed grant (or request): resource permissions and the other scopes
/// (`launch`, `openid`, `fhirUser`, `online_access`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    pub permissions: Vec<Permission>,
    pub other: BTreeSet<String>,
}

const LETTERS: &str = "cruds";

fn normalise_letters(s: &str) -> Option<String> {
    if s.is_empty() || !s.chars().all(|c| LETTERS.contains(c)) {
        return None;
    }
    Some(LETTERS.chars().filter(|c| s.contains(*c)).collect())
}

impl Scopes {
    /// Parse a space-separated scope string, v1 or v2. Granular v2 scopes
    /// (`?category=…`) count only for what they name, so they are kept as
    /// "other" and never widen a permission.
    pub fn parse(scope: &str) -> Scopes {
        let mut out = Scopes::default();
        for s in scope.split_whitespace() {
            let parsed = s.split_once('/').and_then(|(ctx, rest)| {
                let context = match ctx {
                    "patient" => Context::Patient,
                    "user" => Context::User,
                    "system" => Context::System,
                    _ => return None,
                };
                let (resource, access) = rest.split_once('.')?;
                if access.contains('?') {
                    return None;
                }
                let letters = match access {
                    "read" => "rs".to_string(),
                    "write" => "cud".to_string(),
                    "*" => LETTERS.to_string(),
                    v2 => normalise_letters(v2)?,
                };
                Some(Permission {
                    context,
                    resource: resource.to_string(),
                    letters,
                })
            });
            match parsed {
                Some(p) => out.permissions.push(p),
                None => {
                    out.other.insert(s.to_string());
                }
            }
        }
        out
    }

    /// Does the grant allow `letter` (one of `cruds`) on `resource`, in any context?
    pub fn allows(&self, resource: &str, letter: char) -> bool {
        self.permissions
            .iter()
            .any(|p| (p.resource == resource || p.resource == "*") && p.letters.contains(letter))
    }

    /// `allows`, for a `user/` (or v1 `user/`) permission only: what a user
    /// may see across patients, never a `patient/` grant.
    pub fn allows_user(&self, resource: &str, letter: char) -> bool {
        self.permissions.iter().any(|p| {
            p.context == Context::User
                && (p.resource == resource || p.resource == "*")
                && p.letters.contains(letter)
        })
    }

    pub fn has(&self, other: &str) -> bool {
        self.other.contains(other)
    }
}

/// The syntax to ask in: v2 when the server advertises `permission-v2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    V1,
    V2,
}

/// What Passerelle asks for, and why (the README's registration table is
/// this list). Letters are v2; v1 requests use `.read` / `.write`.
pub const RESOURCE_SCOPES: &[(&str, &str, &str)] = &[
    (
        "Patient",
        "rs",
        "patient banner; patient search when the EHR offers no picker",
    ),
    ("Encounter", "rs", "the visit's encounter"),
    ("Coverage", "rs", "coverage cards, gaps and appeal regimes"),
    (
        "Organization",
        "crs",
        "payer and service names; the organisation a referral goes to",
    ),
    ("Practitioner", "rs", "who is signed in (fhirUser)"),
    (
        "PractitionerRole",
        "rs",
        "the signed-in practitioner's role: the requester of referrals",
    ),
    (
        "HealthcareService",
        "crs",
        "the community service a referral goes to",
    ),
    ("Location", "crs", "where the community service is given"),
    (
        "Observation",
        "crs",
        "screening history; recording a screening",
    ),
    ("QuestionnaireResponse", "crs", "recording a screening"),
    (
        "Questionnaire",
        "crs",
        "publishing the screening form a response answers",
    ),
    ("Condition", "crus", "health concerns; confirming them"),
    ("ServiceRequest", "crus", "referrals"),
    ("Task", "crus", "referrals, appeals and their follow-up"),
    (
        "Consent",
        "crs",
        "consent to share data with a community service",
    ),
    (
        "DocumentReference",
        "crs",
        "letters of medical necessity and appeal letters",
    ),
    ("ClaimResponse", "rs", "denials to appeal"),
    ("Claim", "rs", "what was denied"),
    ("MedicationRequest", "rs", "treatment history in letters"),
];

/// The scopes of a launch: `launch` (EHR) or `launch/patient` (standalone),
/// `openid fhirUser` for who is signed in, `online_access` for a refresh
/// token that lives as long as the user's EHR session, and the resources.
pub fn requested(syntax: Syntax, ehr_launch: bool) -> String {
    let mut out = vec![
        if ehr_launch {
            "launch"
        } else {
            "launch/patient"
        },
        "openid",
        "fhirUser",
        "online_access",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for (resource, letters, _) in RESOURCE_SCOPES {
        match syntax {
            Syntax::V2 => out.push(format!("user/{resource}.{letters}")),
            Syntax::V1 => {
                out.push(format!("user/{resource}.read"));
                if letters.contains('c') || letters.contains('u') {
                    out.push(format!("user/{resource}.write"));
                }
            }
        }
    }
    out.join(" ")
}

/// A feature that needs some permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub needs: &'static [(&'static str, char)],
}

pub const FEATURES: &[Feature] = &[
    Feature {
        name: "Visit page",
        needs: &[
            ("Patient", 'r'),
            ("Coverage", 's'),
            ("Observation", 's'),
            ("Task", 's'),
        ],
    },
    Feature {
        name: "Record a screening",
        needs: &[
            ("QuestionnaireResponse", 'c'),
            ("Questionnaire", 'c'),
            ("Observation", 'c'),
            ("Condition", 'c'),
        ],
    },
    Feature {
        name: "Confirm a health concern",
        needs: &[("Condition", 'u')],
    },
    Feature {
        name: "Refer to a service",
        needs: &[("ServiceRequest", 'c'), ("Task", 'c')],
    },
    Feature {
        name: "Start an appeal",
        needs: &[("Task", 'c'), ("DocumentReference", 'c')],
    },
    Feature {
        name: "Update a Task",
        needs: &[("Task", 'u')],
    },
];

fn verb(letter: char) -> &'static str {
    match letter {
        'c' => "create",
        'r' => "read",
        'u' => "write",
        'd' => "delete",
        _ => "search",
    }
}

/// The features the grant does not allow, each with its reason
/// (`"read-only: Task write not granted"`).
pub fn disabled_features(grant: &Scopes) -> Vec<(&'static str, String)> {
    FEATURES
        .iter()
        .filter_map(|f| {
            let missing: Vec<String> = f
                .needs
                .iter()
                .filter(|(r, l)| !grant.allows(r, *l))
                .map(|(r, l)| format!("{r} {} not granted", verb(*l)))
                .collect();
            if missing.is_empty() {
                return None;
            }
            let read_only = f.needs.iter().all(|(_, l)| matches!(l, 'c' | 'u' | 'd'));
            let reason = format!(
                "{}{}",
                if read_only { "read-only: " } else { "" },
                missing.join(", ")
            );
            Some((f.name, reason))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_scopes_parse_to_the_same_permissions() {
        let v2 = Scopes::parse("launch openid user/Task.cruds patient/Observation.rs");
        assert!(v2.allows("Task", 'u') && v2.allows("Task", 's') && v2.allows("Observation", 's'));
        assert!(!v2.allows("Observation", 'c'));
        assert!(v2.has("launch") && v2.has("openid"));
        let v1 = Scopes::parse("user/Task.read user/Task.write patient/*.read");
        assert!(v1.allows("Task", 'r') && v1.allows("Task", 'c') && v1.allows("Task", 'u'));
        assert!(
            v1.allows("Coverage", 's'),
            "patient/*.read covers every type"
        );
        assert!(!v1.allows("Coverage", 'c'));
    }

    #[test]
    fn granular_and_malformed_scopes_never_widen_a_grant() {
        let s = Scopes::parse("user/Observation.rs?category=sdoh user/Task.xyz user/Task");
        assert!(!s.allows("Observation", 'r'));
        assert!(!s.allows("Task", 'r'));
        assert_eq!(s.other.len(), 3);
    }

    #[test]
    fn requests_follow_the_servers_syntax() {
        let v2 = requested(Syntax::V2, true);
        assert!(v2.starts_with("launch openid fhirUser online_access "));
        assert!(v2.contains("user/Task.crus") && v2.contains("user/Coverage.rs"));
        let v1 = requested(Syntax::V1, false);
        assert!(v1.starts_with("launch/patient "));
        assert!(
            v1.contains("user/Task.read user/Task.write") && !v1.contains("user/Coverage.write")
        );
        // What we ask for allows every feature.
        assert!(disabled_features(&Scopes::parse(&v2)).is_empty());
        assert!(disabled_features(&Scopes::parse(&v1)).is_empty());
    }

    #[test]
    fn a_read_only_grant_disables_writes_with_the_reason() {
        let grant = Scopes::parse(
            &requested(Syntax::V2, true)
                .replace("crus", "rs")
                .replace("crs", "rs"),
        );
        let disabled = disabled_features(&grant);
        assert!(disabled.iter().all(|(name, _)| *name != "Visit page"));
        let (_, reason) = disabled
            .iter()
            .find(|(n, _)| *n == "Update a Task")
            .unwrap();
        assert_eq!(reason, "read-only: Task write not granted");
        let (_, reason) = disabled
            .iter()
            .find(|(n, _)| *n == "Refer to a service")
            .unwrap();
        assert_eq!(
            reason,
            "read-only: ServiceRequest create not granted, Task create not granted"
        );
    }
}
