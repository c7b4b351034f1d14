//! Reading the practice's Tasks for the coordinators' queue: one paged
//! search with the patient, the focus (ServiceRequest or ClaimResponse) and
//! the ClaimResponse's insurer included, read 200 Tasks a page; later syncs ask only for what changed
//! since (`_lastUpdated`). And what a coordinator changes on a Task from
//! the queue ([`hand_over`]): who follows it up, and notes.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::client::FhirClient;
use super::error::FhirError;
use super::views;
use crate::domain::queue::{FOLLOW_UP_BY, Kind, QueueTask, TEAM_ROLE_SYSTEM};
use crate::domain::sdoh::{Domain, SDOHCC_TEMPORARY_CODES};
use crate::domain::visit::{APPEAL_TASK_SYSTEM, TASK_CODE_SYSTEM};

/// Tasks asked for per page: small pages keep a sync's memory small (each
/// page, with what it includes, is parsed and dropped before the next).
pub const PAGE_SIZE: usize = 200;
/// Pages followed in one sync at most (a million Tasks).
pub const MAX_PAGES: usize = 5000;

/// What kind of queue work a Task is; `None` for Tasks that are not
/// referrals, appeals or patient tasks.
pub fn kind_of(t: &Value) -> Option<Kind> {
    let coding = &t["code"]["coding"][0];
    let (system, code) = (coding["system"].as_str()?, coding["code"].as_str()?);
    let owner_is_patient =
        t["owner"]["reference"].is_string() && t["owner"]["reference"] == t["for"]["reference"];
    match (system, code) {
        (APPEAL_TASK_SYSTEM, _) => Some(Kind::Appeal),
        (
            SDOHCC_TEMPORARY_CODES,
            "make-contact" | "review-material" | "general-information" | "complete-questionnaire",
        ) => Some(Kind::Patient),
        (TASK_CODE_SYSTEM, "fulfill") if owner_is_patient => Some(Kind::Patient),
        (TASK_CODE_SYSTEM, "fulfill")
            if t["focus"]["reference"]
                .as_str()
                .is_some_and(|f| f.starts_with("ServiceRequest/")) =>
        {
            Some(Kind::Referral)
        }
        _ => None,
    }
}

/// The care-team member a Task is assigned to: its `follow-up-by`
/// extension, else its owner when that is a practitioner.
pub fn assignee(t: &Value) -> Option<&Value> {
    t["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"] == FOLLOW_UP_BY)
        .map(|e| &e["valueReference"])
        .or_else(|| {
            t["owner"]["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("Practitioner/"))
                .then_some(&t["owner"])
        })
}

/// The name of the care-team member a Task is assigned to ([`assignee`]),
/// as the Task gives it.
pub fn assignee_name(t: &Value) -> Option<&str> {
    assignee(t).and_then(|a| a["display"].as_str())
}

/// Who follows a Task up at the practice, as a coordinator sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp<'a> {
    /// A member of the care team (`Practitioner/…`), with their name if known.
    Person {
        reference: &'a str,
        name: Option<String>,
    },
    /// A team role (a code of [`TEAM_ROLE_SYSTEM`]) and its label.
    Role { code: &'a str, label: &'a str },
}

/// One change a coordinator makes to a Task from the queue.
#[derive(Debug, Clone)]
pub struct Handover<'a> {
    /// Who follows the Task up from now on, when that changes.
    pub to: Option<FollowUp<'a>>,
    /// A note to add, if any.
    pub note: Option<&'a str>,
    /// `Practitioner/…` of the coordinator, if known.
    pub author: Option<&'a str>,
    /// FHIR dateTime of the change.
    pub now: &'a str,
}

/// The Task after a coordinator's `change`, to be sent with `If-Match`.
///
/// Who follows the Task up at the practice: an appeal is the practice's own
/// work, so its owner; a referral is owned by the service, a task for the
/// patient by the patient: those owners stay, and the team member is named
/// in the follow-up-by extension. Giving the Task to a role sets its
/// `performerType` and takes it from whoever followed it up.
pub fn hand_over(mut task: Value, change: &Handover) -> Value {
    let is_appeal = task["code"]["coding"][0]["system"] == APPEAL_TASK_SYSTEM;
    match &change.to {
        Some(FollowUp::Person { reference, name }) => {
            let mut r = json!({ "reference": reference });
            if let Some(n) = name {
                r["display"] = json!(n);
            }
            if is_appeal {
                task["owner"] = r;
            } else {
                let mut ext: Vec<Value> = task["extension"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| e["url"] != FOLLOW_UP_BY)
                    .collect();
                ext.push(json!({ "url": FOLLOW_UP_BY, "valueReference": r }));
                task["extension"] = json!(ext);
            }
        }
        Some(FollowUp::Role { code, label }) => {
            task["performerType"] = json!([{ "coding": [{ "system": TEAM_ROLE_SYSTEM, "code": code, "display": label }] }]);
            if let Some(o) = task.as_object_mut() {
                if is_appeal {
                    if o.get("owner")
                        .and_then(|x| x["reference"].as_str())
                        .is_some_and(|r| r.starts_with("Practitioner/"))
                    {
                        o.remove("owner");
                    }
                } else if let Some(ext) = o.get_mut("extension").and_then(|e| e.as_array_mut()) {
                    ext.retain(|e| e["url"] != FOLLOW_UP_BY);
                    if ext.is_empty() {
                        o.remove("extension");
                    }
                }
            }
        }
        None => {}
    }
    if let Some(text) = change.note {
        let mut n = json!({ "text": text, "time": change.now });
        if let Some(m) = change.author {
            n["authorReference"] = json!({ "reference": m });
        }
        match task["note"].as_array_mut() {
            Some(notes) => notes.push(n),
            None => task["note"] = json!([n]),
        }
    }
    task["lastModified"] = json!(change.now);
    task
}

/// A Task as the queue holds it, with what the search included.
pub fn queue_task(t: &Value, included: &HashMap<String, Value>) -> Option<QueueTask> {
    let kind = kind_of(t)?;
    let id = t["id"].as_str()?.to_string();
    let patient_ref = t["for"]["reference"].as_str()?;
    let patient_id = patient_ref.strip_prefix("Patient/")?.to_string();
    let focus = t["focus"]["reference"]
        .as_str()
        .and_then(|r| included.get(r));
    let domain = focus
        .filter(|f| f["resourceType"] == "ServiceRequest")
        .and_then(|sr| {
            sr["category"].as_array()?.iter().find_map(|c| {
                let k = &c["coding"][0];
                (k["system"] == SDOHCC_TEMPORARY_CODES)
                    .then(|| Domain::ALL.into_iter().find(|d| k["code"] == d.code()))
                    .flatten()
            })
        });
    let payer = t["input"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["type"]["coding"][0]["code"] == "payer")
        .and_then(|i| i["valueString"].as_str().map(String::from))
        .or_else(|| {
            let insurer = focus?["insurer"]["reference"].as_str()?;
            included.get(insurer)?["name"].as_str().map(String::from)
        });
    let role = t["performerType"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["coding"].as_array())
        .flatten()
        .find(|k| k["system"] == TEAM_ROLE_SYSTEM)
        .and_then(|k| k["code"].as_str().map(String::from));
    Some(QueueTask {
        id,
        version: t["meta"]["versionId"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        kind,
        status: t["status"].as_str().unwrap_or_default().to_string(),
        description: t["description"]
            .as_str()
            .or(t["code"]["coding"][0]["display"].as_str())
            .unwrap_or("(no description)")
            .to_string(),
        priority: t["priority"].as_str().unwrap_or("routine").to_string(),
        patient_name: included
            .get(patient_ref)
            .and_then(views::json_human_name)
            .unwrap_or_else(|| patient_id.clone()),
        patient_id,
        owner: assignee(t)
            .and_then(|a| a["reference"].as_str())
            .map(String::from),
        owner_name: assignee(t)
            .and_then(|a| a["display"].as_str())
            .map(String::from),
        role,
        domain,
        payer,
        authored: views::json_date(&t["authoredOn"]),
        due: views::json_date(&t["restriction"]["period"]["end"]),
        last_updated: t["meta"]["lastUpdated"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        procedure_output: t["output"].as_array().into_iter().flatten().any(|o| {
            o["valueReference"]["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("Procedure/"))
        }),
        report: super::task::report(t),
    })
}

/// The Tasks of the queue; with `since` (a FHIR instant), only those changed
/// at or after it. Returns the Tasks and the latest `meta.lastUpdated` seen.
pub async fn read_tasks(
    client: &FhirClient,
    since: Option<&str>,
) -> Result<(Vec<QueueTask>, Option<String>), FhirError> {
    let mut params: Vec<(&str, String)> = vec![
        ("_count", PAGE_SIZE.to_string()),
        ("_include", "Task:patient".into()),
        ("_include", "Task:focus".into()),
        ("_include:iterate", "ClaimResponse:insurer".into()),
    ];
    if let Some(s) = since {
        params.push(("_lastUpdated", format!("ge{s}")));
    }
    // Page by page: only one page (1,000 Tasks and what they include) is
    // held at a time, so a sync of any size runs in flat memory.
    let mut tasks = Vec::new();
    let mut latest: Option<String> = None;
    let mut page = client.search("Task", &params).await?;
    for pages in 1.. {
        let mut included: HashMap<String, Value> = HashMap::new();
        for r in page
            .raw("Patient")
            .chain(page.raw("ServiceRequest"))
            .chain(page.raw("ClaimResponse"))
            .chain(page.raw("Organization"))
        {
            if let (Some(t), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) {
                included.insert(format!("{t}/{id}"), r.clone());
            }
        }
        for t in page.raw("Task") {
            if let Some(u) = t["meta"]["lastUpdated"].as_str()
                && latest.as_deref().is_none_or(|l| u > l)
            {
                latest = Some(u.to_string());
            }
            tasks.extend(queue_task(t, &included));
        }
        if pages >= MAX_PAGES {
            break;
        }
        match client.next_page(&page, "Task").await? {
            Some(next) => page = next,
            None => break,
        }
    }
    Ok((tasks, latest))
}

/// One member of the care team: a practitioner and their role.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TeamMember {
    /// `Practitioner/…`
    pub reference: String,
    pub name: String,
    pub role: String,
}

/// The care team: PractitionerRoles coded with a team role, with their
/// practitioners' names.
/// Of `ids` (Patient ids), those the client's own token can read: one
/// search `Patient?_id=a,b,…&_elements=id`, so the server applies the
/// user's access rules (departments, confidential patients, a patient
/// compartment) as it would to any read. A refusal (403) means none.
/// At most [`ID_BATCH`] ids per call.
pub async fn readable_patient_ids(
    client: &FhirClient,
    ids: &[String],
) -> Result<std::collections::HashSet<String>, FhirError> {
    let params = [
        ("_id", ids.join(",")),
        ("_elements", "id".to_string()),
        ("_count", ids.len().max(1).to_string()),
    ];
    match client.search_all("Patient", &params, 10).await {
        Ok(found) => Ok(found
            .raw("Patient")
            .filter_map(|p| p["id"].as_str().map(String::from))
            .collect()),
        Err(FhirError::Refused { status: 403, .. }) => Ok(Default::default()),
        Err(e) => Err(e),
    }
}

/// Patient ids asked about in one [`readable_patient_ids`] search (a URL
/// of about 2 kB).
pub const ID_BATCH: usize = 100;

pub async fn read_team(client: &FhirClient) -> Result<Vec<TeamMember>, FhirError> {
    let page = client
        .search_all(
            "PractitionerRole",
            &[
                ("_count", "200".into()),
                ("_include", "PractitionerRole:practitioner".into()),
            ],
            10,
        )
        .await?;
    let names: HashMap<String, String> = page
        .raw("Practitioner")
        .filter_map(|p| {
            Some((
                format!("Practitioner/{}", p["id"].as_str()?),
                views::json_human_name(p)?,
            ))
        })
        .collect();
    let mut team: Vec<TeamMember> = page
        .raw("PractitionerRole")
        .filter(|r| r["active"] != false)
        .filter_map(|r| {
            let reference = r["practitioner"]["reference"].as_str()?.to_string();
            let role = r["code"]
                .as_array()?
                .iter()
                .filter_map(|c| c["coding"].as_array())
                .flatten()
                .find(|k| k["system"] == TEAM_ROLE_SYSTEM)?["code"]
                .as_str()?
                .to_string();
            Some(TeamMember {
                name: names
                    .get(&reference)
                    .cloned()
                    .unwrap_or_else(|| reference.clone()),
                reference,
                role,
            })
        })
        .collect();
    team.sort_by(|a, b| a.role.cmp(&b.role).then(a.name.cmp(&b.name)));
    Ok(team)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tasks_become_queue_rows_with_domain_payer_and_role() {
        let included: HashMap<String, Value> = [
            ("Patient/p1".to_string(), json!({ "resourceType": "Patient", "name": [{ "given": ["Jean"], "family": "Dupont" }] })),
            ("ServiceRequest/sr1".to_string(), json!({ "resourceType": "ServiceRequest", "category": [
                { "coding": [{ "system": "http://snomed.info/sct", "code": "410606002" }] },
                { "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": "food-insecurity" }] }] })),
            ("ClaimResponse/cr1".to_string(), json!({ "resourceType": "ClaimResponse", "insurer": { "reference": "Organization/o1" } })),
            ("Organization/o1".to_string(), json!({ "resourceType": "Organization", "name": "Keystone Rx" })),
        ]
        .into();
        let referral = json!({ "resourceType": "Task", "id": "t1", "meta": { "versionId": "3", "lastUpdated": "2026-11-22T10:00:00Z" },
            "status": "accepted", "priority": "urgent",
            "code": { "coding": [{ "system": TASK_CODE_SYSTEM, "code": "fulfill" }] },
            "focus": { "reference": "ServiceRequest/sr1" }, "for": { "reference": "Patient/p1" },
            "owner": { "reference": "Practitioner/n1", "display": "Nadia Roy" },
            "performerType": [{ "coding": [{ "system": TEAM_ROLE_SYSTEM, "code": "nurse" }] }],
            "restriction": { "period": { "end": "2026-12-01" } } });
        let q = queue_task(&referral, &included).unwrap();
        assert_eq!(q.kind, Kind::Referral);
        assert_eq!(q.patient_name, "Jean Dupont");
        assert_eq!(q.domain, Some(Domain::FoodInsecurity));
        assert_eq!(q.role.as_deref(), Some("nurse"));
        assert_eq!(q.owner.as_deref(), Some("Practitioner/n1"));
        let mut served = referral.clone();
        served["owner"] = json!({ "reference": "Organization/pantry" });
        assert_eq!(
            queue_task(&served, &included).unwrap().owner,
            None,
            "a service owns it: unassigned at the practice"
        );
        served["extension"] = json!([{ "url": crate::domain::queue::FOLLOW_UP_BY, "valueReference": { "reference": "Practitioner/n2", "display": "Sam Ortiz" } }]);
        let q = queue_task(&served, &included).unwrap();
        assert_eq!(
            (q.owner.as_deref(), q.owner_name.as_deref()),
            (Some("Practitioner/n2"), Some("Sam Ortiz"))
        );
        assert_eq!(q.version, "3");
        assert_eq!(q.due, Some(time::macros::date!(2026 - 12 - 01)));
        let appeal = json!({ "resourceType": "Task", "id": "t2", "status": "requested",
            "code": { "coding": [{ "system": APPEAL_TASK_SYSTEM, "code": "formulary-exception" }] },
            "focus": { "reference": "ClaimResponse/cr1" }, "for": { "reference": "Patient/p1" } });
        let q = queue_task(&appeal, &included).unwrap();
        assert_eq!(
            (q.kind, q.payer.as_deref()),
            (Kind::Appeal, Some("Keystone Rx"))
        );
        let for_patient = json!({ "resourceType": "Task", "id": "t3", "status": "requested",
            "code": { "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": "make-contact" }] },
            "for": { "reference": "Patient/p1" }, "owner": { "reference": "Patient/p1" } });
        assert_eq!(
            queue_task(&for_patient, &included).unwrap().kind,
            Kind::Patient
        );
        let other = json!({ "resourceType": "Task", "id": "t4", "status": "requested",
            "code": { "coding": [{ "system": "http://example.org", "code": "x" }] }, "for": { "reference": "Patient/p1" } });
        assert!(
            queue_task(&other, &included).is_none(),
            "not the queue's work"
        );
    }
}
