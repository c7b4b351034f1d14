//! Every search Passerelle sends, in one place, so that `passerelle check`
//! can ask the server about exactly these (its CapabilityStatement's
//! `searchParam` and `searchInclude`, FHIR R4 capabilitystatement.html)
//! instead of a list that drifts from the code. A loader that adds or
//! changes a search changes its line here; the test below keeps the list
//! well formed.
//!
//! Paging (`_count`) is left out: every server supports it.

/// One search: what is sent, and which feature goes without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Search {
    pub resource_type: &'static str,
    /// The search parameters sent (names only: values are per patient).
    pub params: &'static [&'static str],
    /// `_include` values (`Type:param`); `_include:iterate` ones too.
    pub includes: &'static [&'static str],
    /// The `_sort` asked for, if any. Passerelle also orders what it shows
    /// itself where a server ignores it (health concerns are not asked
    /// sorted at all, see [`crate::domain::visit::sort_concerns`]).
    pub sort: Option<&'static str>,
    /// The loader that sends it and the feature that needs it.
    pub used_by: &'static str,
}

const fn s(
    resource_type: &'static str,
    params: &'static [&'static str],
    includes: &'static [&'static str],
    sort: Option<&'static str>,
    used_by: &'static str,
) -> Search {
    Search {
        resource_type,
        params,
        includes,
        sort,
        used_by,
    }
}

/// Every search Passerelle sends, by loader.
pub const ALL: &[Search] = &[
    // fhir::context (the visit page)
    s(
        "Encounter",
        &["subject"],
        &[],
        Some("-date"),
        "context: the latest encounter on the visit page",
    ),
    s(
        "Coverage",
        &["beneficiary"],
        &["Coverage:payor"],
        None,
        "context, appeal, patterns: coverage cards, payer names, appeal regimes",
    ),
    s(
        "Observation",
        &["subject", "category"],
        &[],
        Some("-date"),
        "context, screening, referral: screening history",
    ),
    s(
        "Condition",
        &["subject", "category"],
        &[],
        None,
        "context, referral: health concerns",
    ),
    s(
        "Observation",
        &["subject", "code"],
        &[],
        Some("-date"),
        "context, screening, referral: screenings recorded by other systems (by LOINC code)",
    ),
    s(
        "QuestionnaireResponse",
        &["subject"],
        &[],
        None,
        "context, screening, referral: questionnaires answered in other systems",
    ),
    s(
        "ServiceRequest",
        &["subject", "status"],
        &[],
        None,
        "context: open referrals",
    ),
    s(
        "Task",
        &["patient", "status"],
        &[],
        None,
        "context: open referrals, appeals and patient tasks",
    ),
    s(
        "Task",
        &["patient", "status", "_lastUpdated"],
        &[],
        None,
        "context: referrals closed in the last 90 days, with what the service reported",
    ),
    s(
        "ClaimResponse",
        &["patient"],
        &["ClaimResponse:request", "ClaimResponse:insurer"],
        None,
        "context: denials on the visit page",
    ),
    // fhir::appeal
    s(
        "ClaimResponse",
        &["_id", "patient"],
        &["ClaimResponse:request", "ClaimResponse:insurer"],
        None,
        "appeal: the denial appealed",
    ),
    // fhir::referral
    s(
        "MedicationRequest",
        &["subject", "status"],
        &[],
        None,
        "referral: active medications in the referral's context",
    ),
    // fhir::letter
    s(
        "Condition",
        &["subject", "clinical-status"],
        &[],
        None,
        "letter: active problems in letters",
    ),
    s(
        "MedicationRequest",
        &["subject"],
        &[],
        Some("authoredon"),
        "letter: treatment history in letters",
    ),
    s(
        "Coverage",
        &["beneficiary", "status"],
        &["Coverage:payor"],
        None,
        "letter: the active coverage a letter is addressed to",
    ),
    s(
        "Coverage",
        &["_id"],
        &["Coverage:payor"],
        None,
        "letter: the coverage of an appeal's Task",
    ),
    s(
        "DocumentReference",
        &["related", "subject"],
        &[],
        None,
        "letter: the letters stored for a Task",
    ),
    // fhir::people
    s(
        "Patient",
        &["name"],
        &[],
        None,
        "people: the patient picker",
    ),
    // fhir::queue
    s(
        "Task",
        &["_lastUpdated"],
        &["Task:patient", "Task:focus", "ClaimResponse:insurer"],
        None,
        "queue: the coordinators' queue and its changes since the last sync",
    ),
    s(
        "PractitionerRole",
        &[],
        &["PractitionerRole:practitioner"],
        None,
        "queue: the care team to assign Tasks to",
    ),
    // fhir::people
    s(
        "PractitionerRole",
        &["practitioner", "active"],
        &[],
        None,
        "refer: the signed-in practitioner's role, the requester of referrals",
    ),
    // fhir::patterns
    s(
        "ClaimResponse",
        &["created", "patient"],
        &["ClaimResponse:request", "ClaimResponse:insurer"],
        None,
        "patterns: denials in the period",
    ),
    s(
        "Task",
        &["code", "patient"],
        &["Task:focus"],
        None,
        "patterns: appeals and referrals",
    ),
    s(
        "Observation",
        &["patient", "category"],
        &[],
        None,
        "patterns: screenings",
    ),
    s(
        "Observation",
        &["patient", "code"],
        &[],
        None,
        "patterns: screenings recorded by other systems (by LOINC code)",
    ),
    s(
        "QuestionnaireResponse",
        &["patient"],
        &[],
        None,
        "patterns: questionnaires answered in other systems",
    ),
    s(
        "Condition",
        &["patient", "category"],
        &[],
        None,
        "patterns: health concerns",
    ),
    s(
        "Encounter",
        &["date", "patient"],
        &[],
        None,
        "patterns: visits in the period",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_search_names_a_type_its_feature_and_well_formed_includes() {
        for search in ALL {
            assert!(
                search.resource_type.starts_with(char::is_uppercase),
                "{search:?}"
            );
            assert!(!search.used_by.is_empty());
            assert!(!search.params.contains(&"_count"), "paging is not listed");
            for include in search.includes {
                let (source, param) = include.split_once(':').expect("Type:param");
                assert!(source.starts_with(char::is_uppercase) && !param.is_empty());
            }
        }
        // The searches the issue names are on the list.
        let sent = |t: &str, p: &str| {
            ALL.iter()
                .any(|s| s.resource_type == t && s.params.contains(&p))
        };
        assert!(sent("DocumentReference", "related"));
        assert!(sent("MedicationRequest", "subject"));
        assert!(sent("MedicationRequest", "status"));
        assert!(sent("Condition", "clinical-status"));
        assert!(sent("Coverage", "status"));
    }
}
