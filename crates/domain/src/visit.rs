//! The visit context: what a clinician sees when Passerelle opens during a
//! visit. Plain values, built by `passerelle::fhir::context` from the FHIR
//! server's answers and summarised here.

use time::Date;

use super::coverage::{Code, CoverageSummary};
use super::referral::Status;
use super::sdoh::Domain;

/// Canonical base of the few codes and tags Passerelle defines itself
/// (`.example.org` is reserved for documentation: nothing is served there).
pub const PASSERELLE_CANONICAL: &str = "http://passerelle.example.org/fhir";
/// Code system of appeal Tasks (documented in `profiles/`).
pub const APPEAL_TASK_SYSTEM: &str = "http://passerelle.example.org/fhir/CodeSystem/appeal-task";
/// FHIR task codes (`fulfill` for referral management, per SDOHCC).
pub const TASK_CODE_SYSTEM: &str = "http://hl7.org/fhir/CodeSystem/task-code";

/// A section of the page that loaded, or why it did not. One failing search
/// never blanks the page: the others still show.
pub type Section<T> = Result<T, SectionError>;

/// Why a section is missing, in words for the clinician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionError {
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    pub label: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Language {
    pub code: String,
    pub display: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatientSummary {
    pub id: String,
    pub name: String,
    pub birth_date: Option<Date>,
    pub gender: Option<String>,
    pub identifiers: Vec<Identifier>,
    pub language: Option<Language>,
    pub interpreter_needed: Option<bool>,
    /// The first address's postal code: services are searched near it.
    pub postal_code: Option<String>,
}

impl PatientSummary {
    /// Age in whole years on `today`.
    pub fn age_on(&self, today: Date) -> Option<i32> {
        let b = self.birth_date?;
        let mut age = today.year() - b.year();
        if (today.month() as u8, today.day()) < (b.month() as u8, b.day()) {
            age -= 1;
        }
        Some(age)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EncounterSummary {
    pub id: String,
    pub status: String,
    pub class: Option<String>,
    pub types: Vec<String>,
    pub start: Option<Date>,
    pub end: Option<Date>,
}

/// What the evidence says of one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Finding {
    Positive,
    Negative,
    /// The patient declined to answer: no result, shown only when the
    /// domain has no result at all.
    Declined,
}

/// The state of one domain, from [`crate::evidence::read`]: the latest
/// result, where it comes from, and the record that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainScreening {
    pub domain: Domain,
    /// `None` when the record has no date (never "recent").
    pub date: Option<Date>,
    pub finding: Finding,
    /// Recorded with a preliminary status (Observation `preliminary`,
    /// QuestionnaireResponse `in-progress`, Condition `provisional`).
    pub preliminary: bool,
    /// Who recorded it, in words, when the record says.
    pub source: Option<String>,
    /// `Observation/…`, `QuestionnaireResponse/…` or `Condition/…` of a
    /// positive: a referral's reason.
    pub evidence: Option<String>,
}

impl DomainScreening {
    pub fn positive(&self) -> bool {
        self.finding == Finding::Positive
    }

    /// Positive or negative: a result (declined is not).
    pub fn is_result(&self) -> bool {
        matches!(self.finding, Finding::Positive | Finding::Negative)
    }

    /// A result on or after `since`: its domain is not asked again.
    pub fn recent(&self, since: Date) -> bool {
        self.is_result() && self.date.is_some_and(|d| d >= since)
    }
}

/// An SDOH health concern (Condition).
#[derive(Debug, Clone, PartialEq)]
pub struct Concern {
    pub id: String,
    /// The version shown, sent back with `If-Match` when the clinician acts on it.
    pub version: Option<String>,
    pub domains: Vec<Domain>,
    pub text: String,
    pub verification: Option<String>,
    pub clinical_status: Option<String>,
    pub recorded: Option<Date>,
    /// `onsetDateTime` or `onsetPeriod.start`: the date when none was recorded.
    pub onset: Option<Date>,
    /// Who recorded it, in words (`meta.source`, the recorder or asserter).
    pub source: Option<String>,
}

/// Health concerns newest first, whatever order the server sent them in:
/// a server may ignore or refuse `_sort` (FHIR R4 search.html#_sort is
/// optional), so Passerelle sorts them itself. By `recordedDate`, else the
/// onset, newest first; undated last; ties by id, so the order is the same
/// on every load.
pub fn sort_concerns(concerns: &mut [Concern]) {
    concerns.sort_by(|a, b| {
        let date = |c: &Concern| c.recorded.or(c.onset);
        date(b).cmp(&date(a)).then_with(|| a.id.cmp(&b.id))
    });
}

/// What a Task is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    /// Referral management (`fulfill`, focus a ServiceRequest).
    Referral,
    /// An appeal, with its code (internal-appeal, expedited-appeal, …).
    Appeal(String),
    /// A task for the patient to do.
    Patient,
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskSummary {
    pub id: String,
    pub kind: TaskKind,
    pub status: String,
    pub description: String,
    pub focus: Option<String>,
    pub owner: Option<String>,
    pub priority: Option<String>,
    pub authored: Option<Date>,
    pub due: Option<Date>,
    /// What the performer reported on the Task.
    pub report: Report,
}

/// What a Task's performer (the service, the patient) reported on it, as
/// they set it: `statusReason`, `businessStatus` and `output` (SDOHCC Task
/// For Referral Management: the performer sets the status and its reason,
/// and the resulting activity in `output`), each in words. Untrusted text:
/// the pages escape it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub status_reason: Option<String>,
    pub business_status: Option<String>,
    pub outputs: Vec<String>,
}

impl Report {
    /// The report in one line ("" when there is none): where the work
    /// stands, why, and what came of it.
    pub fn words(&self) -> String {
        self.business_status
            .iter()
            .chain(self.status_reason.iter())
            .chain(self.outputs.iter())
            .map(String::as_str)
            .filter(|s| !s.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

impl TaskSummary {
    pub fn is_open(&self) -> bool {
        Status::is_open_code(&self.status)
    }
}

/// Classify a Task from its code and focus.
pub fn task_kind(
    code: Option<&Code>,
    focus_type: Option<&str>,
    owner_is_patient: bool,
) -> TaskKind {
    match code {
        Some(c) if c.system.as_deref() == Some(APPEAL_TASK_SYSTEM) => {
            TaskKind::Appeal(c.code.clone())
        }
        Some(c) if c.system.as_deref() == Some(TASK_CODE_SYSTEM) && c.code == "fulfill" => {
            if owner_is_patient {
                TaskKind::Patient
            } else if focus_type == Some("ServiceRequest") {
                TaskKind::Referral
            } else {
                TaskKind::Other
            }
        }
        _ if owner_is_patient => TaskKind::Patient,
        _ => TaskKind::Other,
    }
}

/// A referral: the ServiceRequest and the Task that tracks it, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Referral {
    pub service_request_id: String,
    pub text: String,
    pub status: String,
    pub performer: Option<String>,
    pub authored: Option<Date>,
    pub task: Option<TaskSummary>,
}

/// A denied (or partly denied) claim or prior authorization.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub id: String,
    pub created: Option<Date>,
    pub payer: String,
    /// claim, preauthorization or predetermination.
    pub use_: String,
    pub outcome: String,
    pub service: Option<String>,
    pub reasons: Vec<Code>,
    /// The payer's own words, verbatim.
    pub disposition: Option<String>,
}

/// Everything the visit page shows.
#[derive(Debug, Clone)]
pub struct VisitContext {
    pub patient: PatientSummary,
    pub encounter: Option<Section<EncounterSummary>>,
    pub coverage: Section<CoverageSummary>,
    pub screenings: Section<Vec<DomainScreening>>,
    pub concerns: Section<Vec<Concern>>,
    pub referrals: Section<Vec<Referral>>,
    /// Referral Tasks closed in the last [`RECENTLY_CLOSED_DAYS`] days,
    /// with what the service reported: the loop, seen from the visit.
    pub closed_referrals: Section<Vec<TaskSummary>>,
    pub appeals: Section<Vec<TaskSummary>>,
    pub patient_tasks: Section<Vec<TaskSummary>>,
    pub denials: Section<Vec<Denial>>,
    /// Entries the server sent that could not be read, by resource type.
    pub skipped: Vec<(String, usize)>,
}

/// How far back the visit page shows closed referrals.
pub const RECENTLY_CLOSED_DAYS: i64 = 90;

/// Pair open referral Tasks with their ServiceRequests; a Task whose
/// ServiceRequest was not returned still shows, and vice versa.
pub fn pair_referrals(requests: Vec<Referral>, tasks: &[TaskSummary]) -> Vec<Referral> {
    let mut out: Vec<Referral> = requests
        .into_iter()
        .map(|mut r| {
            let focus = format!("ServiceRequest/{}", r.service_request_id);
            r.task = tasks
                .iter()
                .find(|t| t.focus.as_deref() == Some(focus.as_str()))
                .cloned();
            r
        })
        .collect();
    for t in tasks.iter().filter(|t| t.kind == TaskKind::Referral) {
        let paired = out
            .iter()
            .any(|r| r.task.as_ref().is_some_and(|rt| rt.id == t.id));
        if !paired {
            out.push(Referral {
                service_request_id: t
                    .focus
                    .clone()
                    .unwrap_or_default()
                    .trim_start_matches("ServiceRequest/")
                    .into(),
                text: t.description.clone(),
                status: t.status.clone(),
                performer: t.owner.clone(),
                authored: t.authored,
                task: Some(t.clone()),
            });
        }
    }
    out.retain(|r| {
        r.task.as_ref().map_or(
            r.status == "active" || r.status == "draft" || r.status == "on-hold",
            TaskSummary::is_open,
        )
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn concerns_are_sorted_newest_first_by_recorded_date_or_onset_then_id() {
        let concern = |id: &str, recorded: Option<Date>, onset: Option<Date>| Concern {
            id: id.into(),
            version: None,
            domains: vec![],
            text: id.into(),
            verification: None,
            clinical_status: None,
            recorded,
            onset,
            source: None,
        };
        // As a server that ignores _sort might send them.
        let mut list = vec![
            concern("undated", None, None),
            concern("old", Some(date!(2024 - 03 - 01)), None),
            concern("b-same-day", Some(date!(2026 - 01 - 05)), None),
            concern("onset-only", None, Some(date!(2025 - 06 - 01))),
            concern("a-same-day", Some(date!(2026 - 01 - 05)), None),
            concern(
                "recorded-wins",
                Some(date!(2023 - 01 - 01)),
                Some(date!(2026 - 12 - 01)),
            ),
        ];
        sort_concerns(&mut list);
        let ids: Vec<&str> = list.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "a-same-day",
                "b-same-day",
                "onset-only",
                "old",
                "recorded-wins",
                "undated"
            ]
        );
        let mut again = list.clone();
        again.reverse();
        sort_concerns(&mut again);
        assert_eq!(again, list, "the same order whatever the server's");
    }

    #[test]
    fn age_counts_birthdays() {
        let p = PatientSummary {
            id: "p".into(),
            name: "n".into(),
            birth_date: Some(date!(1960 - 11 - 23)),
            gender: None,
            identifiers: vec![],
            language: None,
            interpreter_needed: None,
            postal_code: None,
        };
        assert_eq!(p.age_on(date!(2026 - 11 - 22)), Some(65));
        assert_eq!(p.age_on(date!(2026 - 11 - 23)), Some(66));
    }

    #[test]
    fn tasks_are_classified_by_code_focus_and_owner() {
        let fulfill = Code {
            system: Some(TASK_CODE_SYSTEM.into()),
            code: "fulfill".into(),
            display: None,
        };
        let appeal = Code {
            system: Some(APPEAL_TASK_SYSTEM.into()),
            code: "internal-appeal".into(),
            display: None,
        };
        assert_eq!(
            task_kind(Some(&fulfill), Some("ServiceRequest"), false),
            TaskKind::Referral
        );
        assert_eq!(
            task_kind(Some(&fulfill), Some("ServiceRequest"), true),
            TaskKind::Patient
        );
        assert_eq!(
            task_kind(Some(&appeal), Some("ClaimResponse"), false),
            TaskKind::Appeal("internal-appeal".into())
        );
        assert_eq!(task_kind(None, None, false), TaskKind::Other);
    }

    #[test]
    fn a_report_reads_as_one_line_in_order() {
        assert_eq!(Report::default().words(), "");
        let r = Report {
            status_reason: Some("Enrolled".into()),
            business_status: Some("Groceries weekly".into()),
            outputs: vec!["Resulting activity: Procedure/7".into(), " ".into()],
        };
        assert_eq!(
            r.words(),
            "Groceries weekly · Enrolled · Resulting activity: Procedure/7"
        );
    }

    #[test]
    fn referrals_pair_with_their_tasks_and_closed_ones_drop() {
        let task = |id: &str, sr: &str, status: &str| TaskSummary {
            id: id.into(),
            kind: TaskKind::Referral,
            status: status.into(),
            description: "Food pantry".into(),
            focus: Some(format!("ServiceRequest/{sr}")),
            owner: None,
            priority: None,
            authored: None,
            due: None,
            report: Report::default(),
        };
        let sr = |id: &str| Referral {
            service_request_id: id.into(),
            text: "Refer to food pantry".into(),
            status: "active".into(),
            performer: None,
            authored: None,
            task: None,
        };
        let out = pair_referrals(
            vec![sr("a"), sr("b")],
            &[
                task("t1", "a", "in-progress"),
                task("t2", "b", "completed"),
                task("t3", "c", "requested"),
            ],
        );
        let ids: Vec<_> = out
            .iter()
            .map(|r| {
                (
                    r.service_request_id.as_str(),
                    r.task.as_ref().map(|t| t.id.as_str()),
                )
            })
            .collect();
        assert_eq!(ids, vec![("a", Some("t1")), ("c", Some("t3"))]);
    }
}
