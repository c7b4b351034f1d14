//! The coordinators' queue: every referral, appeal and patient task of the
//! practice, filtered, counted, sorted by deadline and priority, and paged.
//! Pure: the tasks are plain values kept fresh by `passerelle::queue`.

use std::collections::BTreeMap;

use time::Date;

use super::coverage::{DeadlineWarning, deadline_warning};
use super::referral::Status;
use super::sdoh::Domain;

/// Extension naming the care-team member who follows a Task up when the
/// Task's `owner` is someone else (the community service of a referral,
/// the patient of a task for the patient): owners are never overwritten.
pub const FOLLOW_UP_BY: &str =
    "http://passerelle.example.org/fhir/StructureDefinition/follow-up-by";

/// Code system of the team roles Passerelle knows (PractitionerRole.code,
/// Task.performerType).
pub const TEAM_ROLE_SYSTEM: &str = "http://passerelle.example.org/fhir/CodeSystem/team-role";

/// The roles of a practice's care team.
pub const ROLES: [(&str, &str); 5] = [
    ("physician", "Physician"),
    ("nurse", "Nurse"),
    ("medical-assistant", "Medical assistant"),
    ("social-worker", "Social worker"),
    ("coordinator", "Care coordinator"),
];

pub fn role_label(code: &str) -> Option<&'static str> {
    ROLES.iter().find(|(c, _)| *c == code).map(|(_, l)| *l)
}

/// What kind of work a Task is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    Referral,
    Appeal,
    Patient,
}

impl Kind {
    pub fn code(self) -> &'static str {
        match self {
            Kind::Referral => "referral",
            Kind::Appeal => "appeal",
            Kind::Patient => "patient",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Referral => "Referral",
            Kind::Appeal => "Appeal",
            Kind::Patient => "Patient task",
        }
    }

    pub fn parse(code: &str) -> Option<Kind> {
        [Kind::Referral, Kind::Appeal, Kind::Patient]
            .into_iter()
            .find(|k| k.code() == code)
    }
}

/// One Task as the queue holds it (also as several instances share it,
/// sealed, in the shared store).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueTask {
    pub id: String,
    pub version: String,
    pub kind: Kind,
    pub status: String,
    pub description: String,
    /// routine, urgent, asap, stat
    pub priority: String,
    pub patient_id: String,
    pub patient_name: String,
    /// `Practitioner/…` of the care-team member the Task is assigned to: the
    /// `owner` of an appeal, the [`FOLLOW_UP_BY`] extension otherwise.
    pub owner: Option<String>,
    pub owner_name: Option<String>,
    /// The role the Task is assigned to (`Task.performerType`), if any.
    pub role: Option<String>,
    pub domain: Option<Domain>,
    pub payer: Option<String>,
    pub authored: Option<Date>,
    pub due: Option<Date>,
    /// FHIR instant of the last change, for sorting what changed.
    pub last_updated: String,
    /// Its `output` names a Procedure: the service reported what it did
    /// (a completed referral with one closes the loop).
    pub procedure_output: bool,
    /// What the performer reported (status reason, business status,
    /// outputs).
    pub report: crate::visit::Report,
}

impl QueueTask {
    pub fn is_open(&self) -> bool {
        Status::is_open_code(&self.status)
    }
}

/// Whose Tasks to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerFilter {
    #[default]
    Anyone,
    Me,
    MyRole,
    Unassigned,
}

impl OwnerFilter {
    pub fn code(self) -> &'static str {
        match self {
            OwnerFilter::Anyone => "",
            OwnerFilter::Me => "me",
            OwnerFilter::MyRole => "role",
            OwnerFilter::Unassigned => "unassigned",
        }
    }

    pub fn parse(code: &str) -> OwnerFilter {
        match code {
            "me" => OwnerFilter::Me,
            "role" => OwnerFilter::MyRole,
            "unassigned" => OwnerFilter::Unassigned,
            _ => OwnerFilter::Anyone,
        }
    }
}

/// When the Task is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DueFilter {
    #[default]
    Any,
    Overdue,
    /// Due within 14 days (the first warning), overdue included.
    Soon,
    NoDeadline,
}

impl DueFilter {
    pub fn code(self) -> &'static str {
        match self {
            DueFilter::Any => "",
            DueFilter::Overdue => "overdue",
            DueFilter::Soon => "soon",
            DueFilter::NoDeadline => "none",
        }
    }

    pub fn parse(code: &str) -> DueFilter {
        match code {
            "overdue" => DueFilter::Overdue,
            "soon" => DueFilter::Soon,
            "none" => DueFilter::NoDeadline,
            _ => DueFilter::Any,
        }
    }
}

/// How to order the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Earliest deadline first (none last), then the most urgent.
    #[default]
    Deadline,
    /// Most urgent first, then the earliest deadline.
    Priority,
    /// Most recently changed first.
    Updated,
}

impl Sort {
    pub fn code(self) -> &'static str {
        match self {
            Sort::Deadline => "deadline",
            Sort::Priority => "priority",
            Sort::Updated => "updated",
        }
    }

    pub fn parse(code: &str) -> Sort {
        match code {
            "priority" => Sort::Priority,
            "updated" => Sort::Updated,
            _ => Sort::Deadline,
        }
    }
}

/// The statuses the queue can be filtered by, besides `open`: the course of
/// a Task once sent, then how it ended. `draft` (not sent yet), `received`
/// and `ready` (unused by referrals) and `entered-in-error` (a mistake) are
/// not offered.
pub const STATUS_FILTERS: [Status; 8] = [
    Status::Requested,
    Status::Accepted,
    Status::InProgress,
    Status::OnHold,
    Status::Completed,
    Status::Cancelled,
    Status::Rejected,
    Status::Failed,
];

/// A coordinator's view of the queue.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// A status code, `open` (the default: every open status) or `all`.
    pub status: Option<String>,
    pub kind: Option<Kind>,
    pub owner: OwnerFilter,
    pub domain: Option<Domain>,
    pub payer: Option<String>,
    pub due: DueFilter,
    pub sort: Sort,
    /// 1-based.
    pub page: usize,
    pub per_page: usize,
}

/// Who is looking: their reference and role.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub me: Option<String>,
    pub role: Option<String>,
}

/// A page of the queue, with the count of every filter value (each count
/// applies the other filters, so a coordinator sees what a click gives).
#[derive(Debug, Clone, Default)]
pub struct View<'a> {
    pub rows: Vec<&'a QueueTask>,
    pub total: usize,
    pub pages: usize,
    pub by_status: BTreeMap<String, usize>,
    pub by_kind: BTreeMap<&'static str, usize>,
    pub by_owner: BTreeMap<&'static str, usize>,
    pub by_domain: BTreeMap<&'static str, usize>,
    pub by_payer: BTreeMap<String, usize>,
    pub by_due: BTreeMap<&'static str, usize>,
}

fn priority_rank(p: &str) -> u8 {
    match p {
        "stat" => 0,
        "asap" => 1,
        "urgent" => 2,
        _ => 3,
    }
}

/// Which facet a filter test belongs to, so counts can leave it out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Facet {
    Status,
    Kind,
    Owner,
    Domain,
    Payer,
    Due,
}

fn due_matches(due: DueFilter, t: &QueueTask, today: Date) -> bool {
    match due {
        DueFilter::Any => true,
        DueFilter::NoDeadline => t.due.is_none(),
        DueFilter::Overdue => t.due.is_some_and(|d| d < today),
        DueFilter::Soon => t.due.is_some_and(|d| (d - today).whole_days() <= 14),
    }
}

fn owner_matches(owner: OwnerFilter, t: &QueueTask, v: &Viewer) -> bool {
    match owner {
        OwnerFilter::Anyone => true,
        OwnerFilter::Me => v.me.is_some() && t.owner == v.me,
        OwnerFilter::MyRole => v.role.is_some() && t.role == v.role,
        OwnerFilter::Unassigned => {
            t.owner
                .as_deref()
                .is_none_or(|o| !o.starts_with("Practitioner/"))
                && t.role.is_none()
        }
    }
}

fn matches_except(f: &Filter, v: &Viewer, t: &QueueTask, today: Date, skip: Option<Facet>) -> bool {
    let on = |facet| skip != Some(facet);
    (!on(Facet::Status)
        || match f.status.as_deref() {
            None | Some("") | Some("open") => t.is_open(),
            Some("all") => true,
            Some(s) => t.status == s,
        })
        && (!on(Facet::Kind) || f.kind.is_none_or(|k| t.kind == k))
        && (!on(Facet::Owner) || owner_matches(f.owner, t, v))
        && (!on(Facet::Domain) || f.domain.is_none_or(|d| t.domain == Some(d)))
        && (!on(Facet::Payer) || f.payer.as_ref().is_none_or(|p| t.payer.as_ref() == Some(p)))
        && (!on(Facet::Due) || due_matches(f.due, t, today))
}

/// Filter, count, sort and page `tasks` for `viewer` on `today`.
pub fn view<'a>(
    tasks: impl Iterator<Item = &'a QueueTask> + Clone,
    f: &Filter,
    viewer: &Viewer,
    today: Date,
) -> View<'a> {
    let mut out = View::default();
    let mut rows: Vec<&QueueTask> = Vec::new();
    for t in tasks {
        let all = matches_except(f, viewer, t, today, None);
        if all {
            rows.push(t);
        }
        if matches_except(f, viewer, t, today, Some(Facet::Status)) {
            *out.by_status.entry(t.status.clone()).or_default() += 1;
            if t.is_open() {
                *out.by_status.entry("open".into()).or_default() += 1;
            }
        }
        if matches_except(f, viewer, t, today, Some(Facet::Kind)) {
            *out.by_kind.entry(t.kind.code()).or_default() += 1;
        }
        if matches_except(f, viewer, t, today, Some(Facet::Owner)) {
            for o in [
                OwnerFilter::Me,
                OwnerFilter::MyRole,
                OwnerFilter::Unassigned,
            ] {
                if owner_matches(o, t, viewer) {
                    *out.by_owner.entry(o.code()).or_default() += 1;
                }
            }
        }
        if matches_except(f, viewer, t, today, Some(Facet::Domain))
            && let Some(d) = t.domain
        {
            *out.by_domain.entry(d.code()).or_default() += 1;
        }
        if matches_except(f, viewer, t, today, Some(Facet::Payer))
            && let Some(p) = &t.payer
        {
            *out.by_payer.entry(p.clone()).or_default() += 1;
        }
        if matches_except(f, viewer, t, today, Some(Facet::Due)) {
            for d in [DueFilter::Overdue, DueFilter::Soon, DueFilter::NoDeadline] {
                if due_matches(d, t, today) {
                    *out.by_due.entry(d.code()).or_default() += 1;
                }
            }
        }
    }
    let deadline = |t: &QueueTask| t.due.unwrap_or(Date::MAX);
    match f.sort {
        Sort::Deadline => rows.sort_by(|a, b| {
            deadline(a)
                .cmp(&deadline(b))
                .then(priority_rank(&a.priority).cmp(&priority_rank(&b.priority)))
                .then(a.id.cmp(&b.id))
        }),
        Sort::Priority => rows.sort_by(|a, b| {
            priority_rank(&a.priority)
                .cmp(&priority_rank(&b.priority))
                .then(deadline(a).cmp(&deadline(b)))
                .then(a.id.cmp(&b.id))
        }),
        Sort::Updated => {
            rows.sort_by(|a, b| b.last_updated.cmp(&a.last_updated).then(a.id.cmp(&b.id)))
        }
    }
    let per_page = f.per_page.clamp(1, 200);
    out.total = rows.len();
    out.pages = out.total.div_ceil(per_page).max(1);
    let page = f.page.clamp(1, out.pages);
    out.rows = rows
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    out
}

/// How a Task's deadline stands on `today`, in words ("" when none is near).
pub fn due_words(t: &QueueTask, today: Date) -> String {
    match t
        .due
        .filter(|_| t.is_open())
        .and_then(|d| deadline_warning(d, today))
    {
        Some(DeadlineWarning::Overdue { days_late }) => format!("overdue by {days_late} d"),
        Some(DeadlineWarning::DueSoon { days_left: 0, .. }) => "due today".into(),
        Some(DeadlineWarning::DueSoon { days_left, .. }) => format!("due in {days_left} d"),
        None => String::new(),
    }
}

/// The daily digest: open Tasks overdue, due today, within 3 days and
/// within 14 days (the warning thresholds), most urgent first.
pub fn digest<'a>(
    tasks: impl Iterator<Item = &'a QueueTask>,
    today: Date,
) -> [(&'static str, Vec<&'a QueueTask>); 4] {
    let mut groups: [(&'static str, Vec<&'a QueueTask>); 4] = [
        ("Overdue", vec![]),
        ("Due today", vec![]),
        ("Due within 3 days", vec![]),
        ("Due within 14 days", vec![]),
    ];
    for t in tasks.filter(|t| t.is_open()) {
        let Some(d) = t.due else { continue };
        let left = (d - today).whole_days();
        let i = match left {
            ..0 => 0,
            0 => 1,
            1..=3 => 2,
            4..=14 => 3,
            _ => continue,
        };
        groups[i].1.push(t);
    }
    for (_, g) in &mut groups {
        g.sort_by(|a, b| {
            a.due
                .cmp(&b.due)
                .then(priority_rank(&a.priority).cmp(&priority_rank(&b.priority)))
                .then(a.id.cmp(&b.id))
        });
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const TODAY: Date = date!(2026 - 11 - 22);

    fn task(i: usize) -> QueueTask {
        QueueTask {
            id: format!("t{i:03}"),
            version: "1".into(),
            kind: [Kind::Referral, Kind::Appeal, Kind::Patient][i % 3],
            status: ["requested", "accepted", "in-progress", "completed"][i % 4].into(),
            description: format!("task {i}"),
            priority: if i.is_multiple_of(5) {
                "stat".into()
            } else {
                "routine".into()
            },
            patient_id: format!("p{i}"),
            patient_name: format!("Patient {i}"),
            owner: match i % 4 {
                0 => Some("Practitioner/me".into()),
                1 => Some("Organization/pantry".into()),
                _ => None,
            },
            owner_name: None,
            role: (i % 6 == 2).then(|| "nurse".to_string()),
            domain: i.is_multiple_of(3).then_some(Domain::FoodInsecurity),
            payer: (i % 3 == 1).then(|| "Keystone Rx".to_string()),
            authored: None,
            due: (!i.is_multiple_of(7)).then(|| TODAY + time::Duration::days(i as i64 - 10)),
            last_updated: format!("2026-11-{:02}", 1 + i % 28),
            procedure_output: false,
            report: Default::default(),
        }
    }

    fn tasks(n: usize) -> Vec<QueueTask> {
        (0..n).map(task).collect()
    }

    fn me() -> Viewer {
        Viewer {
            me: Some("Practitioner/me".into()),
            role: Some("nurse".into()),
        }
    }

    #[test]
    fn filters_count_and_each_count_is_what_a_click_gives() {
        let all = tasks(100);
        let f = Filter {
            per_page: 10,
            page: 1,
            ..Default::default()
        };
        let v = view(all.iter(), &f, &me(), TODAY);
        let open = all.iter().filter(|t| t.is_open()).count();
        assert_eq!(v.total, open);
        assert_eq!(v.rows.len(), 10);
        assert_eq!(v.pages, open.div_ceil(10));
        for (kind, count) in v.by_kind.clone() {
            let g = view(
                all.iter(),
                &Filter {
                    kind: Kind::parse(kind),
                    per_page: 10,
                    ..Default::default()
                },
                &me(),
                TODAY,
            );
            assert_eq!(g.total, count, "{kind}");
        }
        for (due, count) in v.by_due.clone() {
            let g = view(
                all.iter(),
                &Filter {
                    due: DueFilter::parse(due),
                    per_page: 10,
                    ..Default::default()
                },
                &me(),
                TODAY,
            );
            assert_eq!(g.total, count, "{due}");
        }
        for (owner, count) in v.by_owner.clone() {
            let g = view(
                all.iter(),
                &Filter {
                    owner: OwnerFilter::parse(owner),
                    ..Default::default()
                },
                &me(),
                TODAY,
            );
            assert_eq!(g.total, count, "{owner}");
            assert!(
                g.rows
                    .iter()
                    .all(|t| owner_matches(OwnerFilter::parse(owner), t, &me()))
            );
        }
        let payer = view(
            all.iter(),
            &Filter {
                payer: Some("Keystone Rx".into()),
                kind: Some(Kind::Appeal),
                ..Default::default()
            },
            &me(),
            TODAY,
        );
        assert!(payer.total > 0);
        assert!(
            payer
                .rows
                .iter()
                .all(|t| t.kind == Kind::Appeal && t.payer.as_deref() == Some("Keystone Rx"))
        );
        let done = view(
            all.iter(),
            &Filter {
                status: Some("completed".into()),
                ..Default::default()
            },
            &me(),
            TODAY,
        );
        assert_eq!(done.total, 25);
        assert_eq!(v.by_status["completed"], 25, "counted though not shown");
    }

    #[test]
    fn sorted_by_deadline_then_priority_or_by_priority_then_deadline() {
        let all = tasks(60);
        let by_deadline = view(
            all.iter(),
            &Filter {
                per_page: 200,
                ..Default::default()
            },
            &me(),
            TODAY,
        );
        let dues: Vec<Date> = by_deadline
            .rows
            .iter()
            .map(|t| t.due.unwrap_or(Date::MAX))
            .collect();
        assert!(dues.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            by_deadline.rows.last().unwrap().due.is_none(),
            "no deadline last"
        );
        let by_priority = view(
            all.iter(),
            &Filter {
                sort: Sort::Priority,
                per_page: 200,
                ..Default::default()
            },
            &me(),
            TODAY,
        );
        let ranks: Vec<u8> = by_priority
            .rows
            .iter()
            .map(|t| priority_rank(&t.priority))
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(by_priority.rows[0].priority, "stat");
        // A page past the end shows the last page.
        let last = view(
            all.iter(),
            &Filter {
                page: 999,
                per_page: 10,
                ..Default::default()
            },
            &me(),
            TODAY,
        );
        assert_eq!(last.rows.len(), last.total - (last.pages - 1) * 10);
    }

    #[test]
    fn the_digest_groups_open_tasks_by_how_soon_they_are_due() {
        let all = tasks(40);
        let d = digest(all.iter(), TODAY);
        assert!(d[0].1.iter().all(|t| t.due.unwrap() < TODAY && t.is_open()));
        assert!(d[1].1.iter().all(|t| t.due == Some(TODAY)));
        assert!(
            d[2].1
                .iter()
                .all(|t| (1..=3).contains(&(t.due.unwrap() - TODAY).whole_days()))
        );
        assert!(
            d[3].1
                .iter()
                .all(|t| (4..=14).contains(&(t.due.unwrap() - TODAY).whole_days()))
        );
        let listed: usize = d.iter().map(|g| g.1.len()).sum();
        let expected = all
            .iter()
            .filter(|t| t.is_open() && t.due.is_some_and(|d| (d - TODAY).whole_days() <= 14))
            .count();
        assert_eq!(listed, expected);
        assert_eq!(due_words(&all[1], TODAY), "overdue by 9 d");
    }
}
