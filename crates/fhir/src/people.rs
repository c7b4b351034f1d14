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
