//! Reading the FHIR server behind the launcher, as an EHR reads its own
//! database: straight to the upstream URL (not through `/fhir/`) with a
//! `system/*.rs` token the launcher signs for itself. Only the pages use
//! it, for the names and encounters they show.
//!
//! This is not [`passerelle::fhir::FhirClient`]: that is the app's client, and
//! the launcher stands on the EHR's side of the wire. It needs no more than
//! a read, a one-page search and a person's name.

use std::time::Duration;

use serde_json::Value;

use super::Shared;
use passerelle::fhir::client::is_valid_id;

/// One read or search may take this long.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The scope of the launcher's own token.
const SCOPE: &str = "system/*.rs";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("The launcher has no FHIR server behind it yet.")]
    NotConfigured,
    #[error("The FHIR server behind the launcher did not answer: {0}")]
    Unreachable(String),
    #[error("{0} was not found on the FHIR server.")]
    NotFound(String),
    #[error("The FHIR server answered {0} to {1}.")]
    Status(u16, String),
    #[error("The FHIR server sent something that is not FHIR JSON for {0}.")]
    Invalid(String),
}

/// A patient or practitioner, as a picker shows them.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub birth_date: String,
}

/// An encounter, as a picker shows it.
#[derive(Debug, Clone)]
pub struct EncounterRow {
    pub id: String,
    /// The id of its subject, when it is a Patient.
    pub patient: Option<String>,
    pub label: String,
    /// `period.start`, for "latest first".
    pub start: String,
}

async fn get_json(
    shared: &Shared,
    what: &str,
    path_and_query: &str,
) -> Result<Value, UpstreamError> {
    let base = shared.upstream().ok_or(UpstreamError::NotConfigured)?;
    let url = base
        .join(path_and_query)
        .map_err(|_| UpstreamError::Invalid(what.to_string()))?;
    let response = shared
        .http
        .get(url)
        .bearer_auth(shared.system_token(SCOPE))
        .header("accept", "application/fhir+json")
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| UpstreamError::Unreachable(without_url(&e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        return Err(UpstreamError::NotFound(what.to_string()));
    }
    if !status.is_success() {
        return Err(UpstreamError::Status(status.as_u16(), what.to_string()));
    }
    response
        .json::<Value>()
        .await
        .map_err(|_| UpstreamError::Invalid(what.to_string()))
}

/// reqwest's message without the URL (it may hold a patient id).
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "it took too long".to_string()
    } else if e.is_connect() {
        "the connection was refused".to_string()
    } else {
        "the request failed".to_string()
    }
}

/// `{type}/{id}`; the id is checked before it goes into a URL.
pub async fn read(shared: &Shared, resource_type: &str, id: &str) -> Result<Value, UpstreamError> {
    let what = format!("{resource_type}/{id}");
    if !is_valid_id(id) {
        return Err(UpstreamError::NotFound(what));
    }
    let resource = get_json(shared, &what, &what).await?;
    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
        return Err(UpstreamError::Invalid(what));
    }
    Ok(resource)
}

/// The resources of the first page of `{type}?_count={count}`.
pub async fn list(
    shared: &Shared,
    resource_type: &str,
    count: u32,
) -> Result<Vec<Value>, UpstreamError> {
    let bundle = get_json(
        shared,
        resource_type,
        &format!("{resource_type}?_count={count}"),
    )
    .await?;
    Ok(bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e.get("resource"))
                .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some(resource_type))
                .cloned()
                .collect()
        })
        .unwrap_or_default())
}

/// Patients or practitioners, sorted by name.
pub async fn people(shared: &Shared, resource_type: &str) -> Result<Vec<Person>, UpstreamError> {
    let mut people: Vec<Person> = list(shared, resource_type, 200)
        .await?
        .iter()
        .filter_map(person)
        .collect();
    people.sort_by_key(|p| p.name.to_lowercase());
    Ok(people)
}

/// Encounters, latest first.
pub async fn encounters(shared: &Shared) -> Result<Vec<EncounterRow>, UpstreamError> {
    let mut rows: Vec<EncounterRow> = list(shared, "Encounter", 500)
        .await?
        .iter()
        .filter_map(encounter)
        .collect();
    rows.sort_by(|a, b| b.start.cmp(&a.start));
    Ok(rows)
}

pub fn person(resource: &Value) -> Option<Person> {
    let id = resource.get("id")?.as_str()?.to_string();
    Some(Person {
        name: human_name(resource).unwrap_or_else(|| format!("(no name) {id}")),
        birth_date: str_at(resource, "birthDate").unwrap_or_default(),
        id,
    })
}

pub fn encounter(resource: &Value) -> Option<EncounterRow> {
    let id = resource.get("id")?.as_str()?.to_string();
    let patient = resource
        .pointer("/subject/reference")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("Patient/"))
        .map(str::to_string);
    let kind = resource
        .pointer("/type/0/text")
        .or_else(|| resource.pointer("/type/0/coding/0/display"))
        .or_else(|| resource.pointer("/class/display"))
        .and_then(Value::as_str)
        .unwrap_or("Encounter");
    let start = resource
        .pointer("/period/start")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let status = str_at(resource, "status").unwrap_or_default();
    let day = start.get(..10).unwrap_or(&start);
    let label = [kind, day, &status]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" · ");
    Some(EncounterRow {
        id,
        patient,
        label,
        start,
    })
}

fn str_at(resource: &Value, key: &str) -> Option<String> {
    resource.get(key)?.as_str().map(str::to_string)
}

pub use passerelle::fhir::views::json_human_name as human_name;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_prefer_official_then_text_then_parts() {
        let p = json!({"id": "a", "name": [
            {"use": "nickname", "given": ["Mimi"]},
            {"use": "official", "family": "García", "given": ["María", "José"]}
        ]});
        assert_eq!(human_name(&p).as_deref(), Some("María José García"));
        let d = json!({"name": [{"prefix": ["Dr."], "given": ["Claire"], "family": "Moreau"}]});
        assert_eq!(human_name(&d).as_deref(), Some("Dr. Claire Moreau"));
        let t = json!({"name": [{"text": "Jean Dupont", "family": "X"}]});
        assert_eq!(human_name(&t).as_deref(), Some("Jean Dupont"));
        assert_eq!(person(&json!({"id": "x"})).unwrap().name, "(no name) x");
    }

    #[test]
    fn encounters_are_labelled_by_type_day_and_status() {
        let e = json!({"id": "e1", "status": "in-progress", "subject": {"reference": "Patient/p1"},
            "type": [{"text": "Office visit"}], "period": {"start": "2026-11-22T09:30:00-05:00"}});
        let row = encounter(&e).unwrap();
        assert_eq!(row.patient.as_deref(), Some("p1"));
        assert_eq!(row.label, "Office visit · 2026-11-22 · in-progress");
    }
}
