//! A Task as the pages read it ([`read`]: its JSON, its version and a plain
//! [`TaskView`] of what the task page shows), and changing its status: the
//! one place a Task's status is updated. The change is checked against the
//! Task's state machine before anything is sent: a Task for the patient
//! follows SDOHCC Task For Patient's ([`crate::domain::patient_task`]),
//! every other Task the referral Task's ([`crate::domain::referral`]). The
//! caller sends the result with `If-Match` on the version the user saw, so
//! nobody overwrites someone else's update.
//!
//! A move that belongs to the performer (the service accepts, starts,
//! completes; the patient starts or completes their own Task), made by a
//! practice user in Passerelle, is recorded as done on the performer's
//! behalf: a `Task.note` says so, written in the same update as the status
//! (FHIR R4 Task.note, Annotation with `authorReference`), so the service
//! and anyone reading the Task later see who set it.

use serde_json::{Value, json};

use crate::domain::appeal::AppealOutcome;
use crate::domain::queue::Kind;
use crate::domain::referral::{Party, Status, TransitionError};
use crate::domain::visit::APPEAL_TASK_SYSTEM;

use super::appeal::APPEAL_INPUT_SYSTEM;
use super::client::{FhirClient, Versioned, is_valid_id};
use super::error::ReadError;

/// A Task as read: the resource to change and send back, the version to
/// send it with (`If-Match`), and what the pages show of it.
#[derive(Debug, Clone)]
pub struct TaskRead {
    pub resource: Value,
    pub version: String,
    pub view: TaskView,
}

/// What the task page shows of a Task, as the Task has it (absent stays
/// `None`; the page words it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskView {
    /// `Task.status` as written (it may be a code Passerelle does not know).
    pub status: Option<String>,
    pub status_reason: Option<String>,
    /// The code of `Task.code` and its display.
    pub code: Option<String>,
    pub display: Option<String>,
    /// An appeal Task (`Task.code` in the appeal code system).
    pub is_appeal: bool,
    /// A Task for the patient (SDOHCC Task For Patient), with its own
    /// state machine.
    pub is_patient_task: bool,
    /// `businessStatus` as the performer set it (its text, else display or
    /// code): the service's own words on where the work stands.
    pub business_status: Option<String>,
    pub description: Option<String>,
    pub priority: Option<String>,
    /// The owner's display, else its reference.
    pub owner: Option<String>,
    /// The date of `authoredOn`.
    pub authored: Option<String>,
    /// The date of `restriction.period.end`: the deadline.
    pub deadline: Option<String>,
    /// (input type code, value in words) of the inputs that have a value:
    /// an appeal's denial, its words verbatim.
    pub inputs: Vec<(String, String)>,
    /// An appeal's outputs, in words (how it ended); a referral's, as the
    /// performer set them (SDOHCC Task For Referral Management `output`:
    /// the resulting activity, a Procedure or a code), in words.
    pub outputs: Vec<String>,
    /// (time, to the minute; text) of each note.
    pub notes: Vec<(String, String)>,
}

/// The Task `id`. With `patient` (a launch for one patient), a Task about
/// anyone else is refused.
pub async fn read(
    client: &FhirClient,
    patient: Option<&str>,
    id: &str,
) -> Result<TaskRead, ReadError> {
    if !is_valid_id(id) {
        return Err(ReadError::refused("The task id is not a valid FHIR id."));
    }
    let read = client.read_json("Task", id).await?;
    // A Task of another patient is not shown in this patient's launch.
    if let Some(p) = patient
        && read.resource["for"]["reference"].as_str() != Some(p)
    {
        return Err(ReadError::refused(
            "This task is not about this launch's patient.",
        ));
    }
    let version = read
        .version
        .clone()
        .or_else(|| {
            read.resource["meta"]["versionId"]
                .as_str()
                .map(String::from)
        })
        .unwrap_or_default();
    Ok(TaskRead {
        view: view(&read.resource),
        resource: read.resource,
        version,
    })
}

/// What the task page shows of `task`.
pub fn view(task: &Value) -> TaskView {
    let text = |v: &Value| v.as_str().map(String::from);
    let date = |v: &Value, chars: usize| v.as_str().map(|d| d.chars().take(chars).collect());
    let list = |key: &str| task[key].as_array().cloned().unwrap_or_default();
    let coding = &task["code"]["coding"][0];
    TaskView {
        status: text(&task["status"]),
        status_reason: text(&task["statusReason"]["text"]),
        code: text(&coding["code"]),
        display: text(&coding["display"]),
        is_appeal: coding["system"] == APPEAL_TASK_SYSTEM,
        is_patient_task: super::queue::kind_of(task) == Some(Kind::Patient),
        business_status: concept_words(&task["businessStatus"]),
        description: text(&task["description"]),
        priority: text(&task["priority"]),
        owner: text(&task["owner"]["display"]).or_else(|| text(&task["owner"]["reference"])),
        authored: date(&task["authoredOn"], 10),
        deadline: date(&task["restriction"]["period"]["end"], 10),
        inputs: list("input")
            .iter()
            .map(|i| {
                let code = i["type"]["coding"][0]["code"].as_str().unwrap_or_default();
                (code.to_string(), value_text(i))
            })
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        outputs: list("output")
            .iter()
            .map(output_text)
            .filter(|o| !o.is_empty())
            .collect(),
        notes: list("note")
            .iter()
            .map(|n| {
                (
                    date(&n["time"], 16).unwrap_or_default(),
                    n["text"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    }
}

/// What the performer reported on `task` (its status reason, business
/// status and outputs, in words).
pub fn report(task: &Value) -> crate::domain::visit::Report {
    let v = view(task);
    crate::domain::visit::Report {
        status_reason: v.status_reason,
        business_status: v.business_status,
        outputs: v.outputs,
    }
}

/// A CodeableConcept in words: its text, else its first display, else code.
pub fn concept_words(cc: &Value) -> Option<String> {
    cc["text"]
        .as_str()
        .or(cc["coding"][0]["display"].as_str())
        .or(cc["coding"][0]["code"].as_str())
        .map(String::from)
}

/// An output in words: an appeal's outcome, or what the performer reports
/// (its type's words, then the value; a reference without a display by the
/// reference itself).
pub fn output_text(o: &Value) -> String {
    if o["type"]["coding"][0]["system"] == APPEAL_INPUT_SYSTEM {
        return value_text(o);
    }
    let what = match o["type"]["coding"][0]["code"].as_str() {
        Some("resulting-activity") => Some("Resulting activity".to_string()),
        _ => concept_words(&o["type"]),
    };
    let value = match value_text(o) {
        v if v.is_empty() => o["valueReference"]["reference"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        v => v,
    };
    match (what, value.is_empty()) {
        (_, true) => String::new(),
        (Some(w), false) => format!("{w}: {value}"),
        (None, false) => value,
    }
}

/// The value of an input or output, in words.
fn value_text(v: &Value) -> String {
    for key in ["valueString", "valueDate", "valueDateTime"] {
        if let Some(s) = v[key].as_str() {
            return s.to_string();
        }
    }
    if let Some(cc) = v.get("valueCodeableConcept") {
        let coding = &cc["coding"][0];
        let code = coding["code"].as_str().unwrap_or_default();
        let words = coding["display"]
            .as_str()
            .or(cc["text"].as_str())
            .unwrap_or_default();
        return format!("{code} {words}").trim().to_string();
    }
    if let Some(r) = v.get("valueReference") {
        return r["display"].as_str().unwrap_or_default().to_string();
    }
    String::new()
}

/// A Task as an update saved it, with the version the server gave (its
/// ETag) as `meta.versionId`: how the queue's index keeps it.
pub fn stamped(mut saved: Versioned<Value>) -> Value {
    if let Some(v) = &saved.version {
        saved.resource["meta"]["versionId"] = json!(v);
    }
    saved.resource
}

/// One status change, as a user asked for it.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub to: Status,
    pub party: Party,
    /// `statusReason.text`: required for rejected, cancelled, on-hold, failed.
    pub reason: Option<&'a str>,
    /// A note added to the Task, if any.
    pub note: Option<&'a str>,
    /// `Practitioner/…` of the person making the change, if known.
    pub author: Option<&'a str>,
    /// For an appeal completed: how it ended.
    pub outcome: Option<AppealOutcome>,
    /// FHIR dateTime of the change.
    pub now: &'a str,
}

/// Why a change cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("This Task has no status Passerelle knows ({0:?}).")]
    UnknownStatus(String),
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

/// Whose move it is, in the words of a note (the performer of a referral
/// is its service, of a Task for the patient the patient).
fn performer_words(task: &Value, patient_task: bool) -> String {
    if patient_task {
        return "the patient".to_string();
    }
    match task["owner"]["display"].as_str() {
        Some(name) => name.to_string(),
        None => "the service".to_string(),
    }
}

/// Check `change` against the machine of `task`'s kind.
pub fn check(task: &Value, from: Status, change: &Change) -> Result<(), TransitionError> {
    let reason = change.reason.map(str::trim).filter(|r| !r.is_empty());
    if super::queue::kind_of(task) == Some(Kind::Patient) {
        crate::domain::patient_task::check(from, change.to, change.party, reason)
    } else {
        crate::domain::referral::check(from, change.to, change.party, reason)
    }
}

/// The Task after `change`, or the rule the change breaks.
pub fn apply(mut task: Value, change: &Change) -> Result<Value, ChangeError> {
    let current = task["status"].as_str().unwrap_or_default().to_string();
    let from = Status::parse(&current).ok_or(ChangeError::UnknownStatus(current))?;
    let reason = change.reason.map(str::trim).filter(|r| !r.is_empty());
    check(&task, from, change)?;
    let patient_task = super::queue::kind_of(&task) == Some(Kind::Patient);
    let is_appeal = task["code"]["coding"][0]["system"] == APPEAL_TASK_SYSTEM;
    // A move of the performer's, made at the practice: said so in a note.
    let on_behalf = (change.party == Party::Performer && !is_appeal).then(|| {
        format!(
            "Status set to {} by the practice, on behalf of {}.",
            change.to.code(),
            performer_words(&task, patient_task)
        )
    });
    task["status"] = json!(change.to.code());
    match reason {
        Some(r) => task["statusReason"] = json!({ "text": r }),
        None => {
            if let Some(o) = task.as_object_mut() {
                o.remove("statusReason");
            }
        }
    }
    task["lastModified"] = json!(change.now);
    // When the work started and ended (Task.executionPeriod): the patterns
    // view measures time to accept and time to close from it.
    if matches!(change.to, Status::Accepted | Status::InProgress)
        && task["executionPeriod"]["start"].is_null()
    {
        task["executionPeriod"] = json!({ "start": change.now });
    }
    if matches!(change.to, Status::Completed | Status::Failed) {
        if task["executionPeriod"]["start"].is_null() {
            task["executionPeriod"] = json!({ "start": change.now });
        }
        task["executionPeriod"]["end"] = json!(change.now);
    }
    let user_note = change.note.map(str::trim).filter(|n| !n.is_empty());
    for text in on_behalf.as_deref().into_iter().chain(user_note) {
        let mut note = json!({ "text": text, "time": change.now });
        if let Some(a) = change.author {
            note["authorReference"] = json!({ "reference": a });
        }
        match task["note"].as_array_mut() {
            Some(notes) => notes.push(note),
            None => task["note"] = json!([note]),
        }
    }
    if let (Some(outcome), Status::Completed) = (change.outcome, change.to) {
        let output = json!({
            "type": { "coding": [{ "system": APPEAL_INPUT_SYSTEM, "code": "appeal-outcome" }] },
            "valueCodeableConcept": { "coding": [{ "system": APPEAL_INPUT_SYSTEM, "code": outcome.code(), "display": outcome.label() }] }
        });
        match task["output"].as_array_mut() {
            Some(outputs) => outputs.push(output),
            None => task["output"] = json!([output]),
        }
    }
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(to: Status, party: Party, reason: Option<&'static str>) -> Change<'static> {
        Change {
            to,
            party,
            reason,
            note: None,
            author: None,
            outcome: None,
            now: "2026-11-22T10:00:00Z",
        }
    }

    #[test]
    fn a_change_sets_status_reason_and_last_modified_and_keeps_the_rest() {
        let task = json!({ "resourceType": "Task", "id": "t1", "meta": { "versionId": "3" }, "status": "accepted", "intent": "order" });
        let mut c = change(
            Status::OnHold,
            Party::Performer,
            Some(" waiting for documents "),
        );
        c.note = Some("Called the pantry");
        c.author = Some("Practitioner/p1");
        let t = apply(task, &c).unwrap();
        assert_eq!(t["status"], "on-hold");
        assert_eq!(t["statusReason"]["text"], "waiting for documents");
        assert_eq!(t["lastModified"], "2026-11-22T10:00:00Z");
        assert_eq!(
            t["note"][0]["authorReference"]["reference"],
            "Practitioner/p1"
        );
        assert_eq!(t["meta"]["versionId"], "3");
        assert!(
            t["executionPeriod"].is_null(),
            "on hold from accepted: no start"
        );
        let t = apply(t, &change(Status::InProgress, Party::Performer, None)).unwrap();
        assert!(
            t.get("statusReason").is_none(),
            "the old reason is not carried over"
        );
    }

    #[test]
    fn an_illegal_change_names_its_rule_and_changes_nothing() {
        let task = json!({ "resourceType": "Task", "status": "requested" });
        assert_eq!(
            apply(
                task.clone(),
                &change(Status::Completed, Party::Performer, None)
            )
            .unwrap_err()
            .to_string(),
            "A referral Task cannot go from requested to completed."
        );
        assert_eq!(
            apply(
                task.clone(),
                &change(Status::Rejected, Party::Performer, None)
            )
            .unwrap_err()
            .to_string(),
            "Moving a referral Task to rejected needs a reason (statusReason)."
        );
        assert!(matches!(
            apply(
                json!({ "status": "done" }),
                &change(Status::Accepted, Party::Performer, None)
            ),
            Err(ChangeError::UnknownStatus(_))
        ));
    }

    #[test]
    fn a_task_for_the_patient_follows_its_own_machine_and_notes_whose_move_it_was() {
        let task = json!({ "resourceType": "Task", "status": "ready",
            "code": { "coding": [{ "system": crate::domain::sdoh::SDOHCC_TEMPORARY_CODES, "code": "make-contact" }] },
            "for": { "reference": "Patient/p1" }, "owner": { "reference": "Patient/p1" } });
        let mut c = change(Status::InProgress, Party::Performer, None);
        c.author = Some("PractitionerRole/r1");
        let t = apply(task.clone(), &c).unwrap();
        assert_eq!(t["status"], "in-progress");
        assert_eq!(
            t["note"][0]["text"],
            "Status set to in-progress by the practice, on behalf of the patient."
        );
        assert_eq!(
            t["note"][0]["authorReference"]["reference"],
            "PractitionerRole/r1"
        );
        assert_eq!(
            apply(
                task.clone(),
                &change(Status::Accepted, Party::Performer, None)
            )
            .unwrap_err()
            .to_string(),
            "SDOHCC Tasks for the patient do not use the status accepted."
        );
        let t = apply(
            task,
            &change(Status::Cancelled, Party::Requester, Some("moved")),
        )
        .unwrap();
        assert!(
            t.get("note").is_none(),
            "the practice's own move needs no note"
        );
    }

    #[test]
    fn a_referral_moved_for_the_service_names_it_and_its_report_reads_in_words() {
        let task = json!({ "resourceType": "Task", "status": "requested",
            "code": { "coding": [{ "system": crate::domain::visit::TASK_CODE_SYSTEM, "code": "fulfill" }] },
            "focus": { "reference": "ServiceRequest/s1" },
            "owner": { "reference": "Organization/o1", "display": "Eastside Pantry" } });
        let t = apply(task, &change(Status::Accepted, Party::Performer, None)).unwrap();
        assert_eq!(
            t["note"][0]["text"],
            "Status set to accepted by the practice, on behalf of Eastside Pantry."
        );
        let done = json!({ "status": "completed",
            "businessStatus": { "text": "Groceries weekly" },
            "statusReason": { "text": "Enrolled" },
            "output": [
                { "type": { "coding": [{ "code": "resulting-activity" }] }, "valueReference": { "reference": "Procedure/p9" } },
                { "type": { "text": "Summary" }, "valueString": "Two visits" }
            ] });
        let r = report(&done);
        assert_eq!(
            r.words(),
            "Groceries weekly · Enrolled · Resulting activity: Procedure/p9 · Summary: Two visits"
        );
    }

    #[test]
    fn a_referral_written_before_with_an_identifier_owner_still_shows_its_service() {
        let legacy = json!({ "resourceType": "Task", "status": "requested",
            "owner": { "identifier": { "system": crate::service::HSDS_SERVICE_SYSTEM, "value": "8e26" },
                "display": "Eastside Community Food Pantry" } });
        let v = view(&legacy);
        assert_eq!(v.owner.as_deref(), Some("Eastside Community Food Pantry"));
        assert_eq!(report(&legacy), Default::default());
        assert_eq!(
            performer_words(&legacy, false),
            "Eastside Community Food Pantry"
        );
    }

    #[test]
    fn a_completed_appeal_records_its_outcome() {
        let task = json!({ "resourceType": "Task", "status": "in-progress" });
        let mut c = change(Status::Completed, Party::Performer, None);
        c.outcome = Some(AppealOutcome::Overturned);
        let t = apply(task, &c).unwrap();
        assert_eq!(
            t["output"][0]["valueCodeableConcept"]["coding"][0]["code"],
            "overturned"
        );
    }
}
