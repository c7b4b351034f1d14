//! The people a page names: the patient (as the plain summary the pages
//! show), the patients a picker lists, and the signed-in practitioner.
//!
//! Each read returns plain values of [`crate::domain`], so the web layer
//! never decodes a Patient or a Practitioner itself.

use fhir_sdk::r4b::resources::{Patient, Practitioner};

use super::client::{FhirClient, is_valid_id};
use super::error::FhirError;
use super::views;
use crate::domain::visit::PatientSummary;

/// How many patients a picker lists at most.
const PICKER_SIZE: &str = "50";

/// The patient `id`, as the pages show them.
pub async fn patient(client: &FhirClient, id: &str) -> Result<PatientSummary, FhirError> {
    let read = client.read::<Patient>("Patient", id).await?;
    Ok(views::patient(&read.resource))
}

/// The patients a picker lists, and how many entries could not be read.
#[derive(Debug, Clone, Default)]
pub struct PatientList {
    pub patients: Vec<PatientSummary>,
    pub skipped: usize,
}

/// Up to 50 of the server's patients, those matching `name` when given.
pub async fn search_patients(
    client: &FhirClient,
    name: Option<&str>,
) -> Result<PatientList, FhirError> {
    let mut params = vec![("_count", PICKER_SIZE.to_string())];
    if let Some(n) = name {
        params.push(("name", n.to_string()));
    }
    let page = client.search("Patient", &params).await?;
    let decoded = page.resources::<Patient>("Patient");
    Ok(PatientList {
        patients: decoded.items.iter().map(views::patient).collect(),
        skipped: decoded.skipped,
    })
}

/// The signed-in user's name (given names, then family), when their
/// `fhirUser` is a Practitioner the server can read; `None` otherwise, and
/// when the read fails (the page then names the user by `fhirUser`).
pub async fn signed_in_name(client: &FhirClient, fhir_user: Option<&str>) -> Option<String> {
    let reference = fhir_user?.rsplit('/').take(2).collect::<Vec<_>>();
    let (id, kind) = (reference.first()?, reference.get(1)?);
    if *kind != "Practitioner" || !is_valid_id(id) {
        return None;
    }
    let p = client.read::<Practitioner>("Practitioner", id).await.ok()?;
    p.resource.name.iter().flatten().next().and_then(|n| {
        let given: Vec<&str> = n.given.iter().flatten().map(String::as_str).collect();
        let full = format!(
            "{} {}",
            given.join(" "),
            n.family.clone().unwrap_or_default()
        );
        (!full.trim().is_empty()).then(|| full.trim().to_string())
    })
}

/// The clinician's name for a letter's signature, from `Practitioner/…`:
/// their official name as written (its text, or prefix, given and family).
pub async fn clinician_name(client: &FhirClient, practitioner: Option<&str>) -> Option<String> {
    let id = practitioner?.strip_prefix("Practitioner/")?;
    let p = client.read_json("Practitioner", id).await.ok()?.resource;
    views::json_human_name(&p)
}

/// Who asks for a referral or a Task for the patient, as SDOHCC wants it:
/// `Task.requester` 1..1, only an SDOHCC PractitionerRole or a US Core
/// Organization (SDOHCC Task For Referral Management and Task For Patient);
/// and the organization that holds the patient's Consent (SDOHCC Consent,
/// `organization` 1..1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// `PractitionerRole/…` or `Organization/…`.
    pub reference: String,
    /// `Organization/…` of the practice, when known.
    pub organization: Option<String>,
}

/// `Organization/<id>` with a valid FHIR id.
pub fn is_organization_reference(r: &str) -> bool {
    r.strip_prefix("Organization/").is_some_and(is_valid_id)
}

/// The requester for the signed-in user (`fhirUser`, as a relative
/// reference): a PractitionerRole user is the requester; a Practitioner is
/// represented by their active PractitionerRole on the server (the first
/// one, `PractitionerRole?practitioner=…&active=true`), as SDOHCC names a
/// role, not a person, as requester; without one, or for any other user,
/// the practice's Organization (`practice`), if configured. `Ok(None)`:
/// nobody can be named, and the caller refuses the write.
pub async fn requester(
    client: &FhirClient,
    fhir_user: Option<&str>,
    practice: Option<&str>,
) -> Result<Option<Requester>, FhirError> {
    let fallback = || {
        practice.map(|o| Requester {
            reference: o.to_string(),
            organization: Some(o.to_string()),
        })
    };
    let Some((kind, id)) = fhir_user.and_then(|u| u.split_once('/')) else {
        return Ok(fallback());
    };
    if !is_valid_id(id) {
        return Ok(fallback());
    }
    let role = match kind {
        "PractitionerRole" => Some(client.read_json("PractitionerRole", id).await?.resource),
        "Practitioner" => {
            let q = [
                ("practitioner", format!("Practitioner/{id}")),
                ("active", "true".to_string()),
                ("_count", "1".to_string()),
            ];
            client
                .search("PractitionerRole", &q)
                .await?
                .raw("PractitionerRole")
                .next()
                .cloned()
        }
        _ => None,
    };
    Ok(match role.as_ref().and_then(|r| r["id"].as_str()) {
        Some(role_id) => Some(Requester {
            reference: format!("PractitionerRole/{role_id}"),
            organization: role
                .as_ref()
                .and_then(|r| r["organization"]["reference"].as_str())
                .filter(|o| is_organization_reference(o))
                .map(String::from)
                .or_else(|| practice.map(String::from)),
        }),
        None => fallback(),
    })
}
