//! The coordinators' queue pages.
//!
//! * `GET /l/{launch}/queue?status=&kind=&owner=&domain=&payer=&due=&sort=&page=`
//!   the practice's Tasks, from the in-memory index ([`crate::queue`]): no
//!   FHIR request per page view. `&fragment=1` returns the table alone,
//!   which the page's script fetches when a change is announced.
//! * `GET /l/{launch}/queue/events`: server-sent events, one `task` event
//!   per Task that changed (in Passerelle or, at the next sync, on the
//!   FHIR server).
//! * `GET /l/{launch}/queue/digest`: what is overdue and due soon.
//! * `POST /l/{launch}/queue/{task}`: claim, assign to a person or a role,
//!   or add a note, with `If-Match` on the version the row showed.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Form as AxumForm, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use futures::Stream;
use serde::Deserialize;

use super::clock::{now_fhir, today};
use super::error::render;
use super::extract::{
    Coordinator, Launched, QuietCoordinator, ResourceId, check_csrf, practitioner_of,
};
use super::{AppError, AppState};
use crate::auth::session::Launch;
use crate::domain::queue::{
    DueFilter, Filter, Kind, OwnerFilter, ROLES, STATUS_FILTERS, Sort, Viewer, digest, due_words,
    role_label, view,
};
use crate::domain::referral::Status;
use crate::domain::sdoh::Domain;
use crate::fhir::queue::{FollowUp, Handover, assignee_name, hand_over};
use crate::fhir::task::{TaskRead, stamped};
use crate::queue::{Queue, Visible};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/l/{id}/queue", get(queue_page))
        .route("/l/{id}/queue/events", get(events))
        .route("/l/{id}/queue/digest", get(digest_page))
        .route("/l/{id}/queue/{tid}", post(act_on))
        .route("/hooks/fhir/{secret}", post(notified))
        .route("/hooks/fhir", post(notified_with_header))
}

/// A subscription notification (R4 backport, rest-hook, id-only): the
/// queue of the matching secret syncs now. Its body is not trusted or
/// needed: the sync asks the server what changed. The secret comes in the
/// endpoint's path or, for a Subscription made with `notify_secret_in:
/// header`, as `Authorization: Bearer` on `/hooks/fhir`.
async fn notified(State(state): State<AppState>, Path(secret): Path<String>) -> Response {
    wake_queue(&state, &secret)
}

async fn notified_with_header(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let secret = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    wake_queue(&state, secret)
}

fn wake_queue(state: &AppState, secret: &str) -> Response {
    match state.queue_by_hook(secret) {
        Some(queue) if !secret.is_empty() => {
            queue.notify();
            axum::http::StatusCode::OK.into_response()
        }
        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// Who is looking: their practitioner reference and team role.
fn viewer(team: &[crate::fhir::queue::TeamMember], launch: &Launch) -> Viewer {
    let me = practitioner_of(launch);
    let role = me.as_ref().and_then(|m| {
        team.iter()
            .find(|t| &t.reference == m)
            .map(|t| t.role.clone())
    });
    Viewer { me, role }
}

#[derive(Deserialize, Default, Clone)]
struct QueueQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    payer: String,
    #[serde(default)]
    due: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    fragment: Option<String>,
}

impl QueueQuery {
    fn filter(&self) -> Filter {
        Filter {
            status: Some(self.status.clone()).filter(|s| !s.is_empty()),
            kind: Kind::parse(&self.kind),
            owner: OwnerFilter::parse(&self.owner),
            domain: Domain::ALL.into_iter().find(|d| d.code() == self.domain),
            payer: Some(self.payer.clone()).filter(|p| !p.is_empty()),
            due: DueFilter::parse(&self.due),
            sort: Sort::parse(&self.sort),
            page: self.page.unwrap_or(1),
            per_page: 50,
        }
    }

    /// This view's query string with one parameter changed (page reset).
    fn with(&self, key: &str, value: &str) -> String {
        let mut pairs = vec![
            ("status", self.status.as_str()),
            ("kind", self.kind.as_str()),
            ("owner", self.owner.as_str()),
            ("domain", self.domain.as_str()),
            ("payer", self.payer.as_str()),
            ("due", self.due.as_str()),
            ("sort", self.sort.as_str()),
        ];
        let page = self.page.unwrap_or(1).to_string();
        if key == "page" {
            pairs.push(("page", page.as_str()));
        }
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            let v = if k == key { value } else { v };
            if !v.is_empty() {
                out.append_pair(k, v);
            }
        }
        out.finish()
    }
}

/// One filter choice: label, link, count, chosen.
struct Choice {
    label: String,
    href: String,
    count: usize,
    chosen: bool,
}

struct RowView {
    id: String,
    version: String,
    kind: &'static str,
    description: String,
    patient: String,
    status: String,
    priority: String,
    owner: String,
    due: String,
    due_words: String,
    overdue: bool,
    mine: bool,
    unassigned: bool,
    /// What the performer reported on the Task (status reason, business
    /// status, outputs): their words, escaped by the template.
    report: String,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    launch_id: String,
    csrf: String,
    role: String,
    query: String,
    synced: String,
    total: usize,
    page: usize,
    pages: usize,
    prev: String,
    next: String,
    facets: Vec<(&'static str, Vec<Choice>)>,
    sorts: Vec<Choice>,
    rows: Vec<RowView>,
    team: Vec<(String, String)>,
    roles: Vec<(String, String)>,
    fragment: bool,
    notice: Option<String>,
}

fn choices(
    q: &QueueQuery,
    key: &str,
    current: &str,
    options: Vec<(String, String, usize)>,
) -> Vec<Choice> {
    let mut out = vec![Choice {
        label: "All".into(),
        href: q.with(key, ""),
        count: 0,
        chosen: current.is_empty(),
    }];
    out.extend(options.into_iter().map(|(code, label, count)| Choice {
        chosen: current == code,
        href: q.with(key, &code),
        label,
        count,
    }));
    out
}

async fn queue_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Path(id): Path<String>,
    Query(q): Query<QueueQuery>,
) -> Result<Response, AppError> {
    // The table the page's script fetches on a change (`fragment`) is the
    // page's own request: it does not keep the launch alive.
    let coordinator = Coordinator::open(&state, &jar, &id, q.fragment.is_none()).await?;
    let visible = coordinator.visible(&state).await?;
    render_queue(&coordinator.launch, &coordinator.queue, &q, &visible, None)
}

/// The queue page: only the Tasks in `visible` count and show.
fn render_queue(
    launch: &Launch,
    queue: &Queue,
    q: &QueueQuery,
    visible: &Visible,
    notice: Option<String>,
) -> Result<Response, AppError> {
    let team = queue.team();
    let who = viewer(&team, launch);
    let today = today();
    let filter = q.filter();
    let notice = notice.or_else(|| {
        (visible.hidden > 0).then(|| {
            format!(
                "{} task(s) of the practice's queue are not shown: your EHR account cannot read them.",
                visible.hidden
            )
        })
    });
    let page = queue.with_tasks(|tasks| {
        let mine = tasks.values().filter(|t| visible.allows(&t.id));
        let v = view(mine, &filter, &who, today);
        let count = |m: &std::collections::BTreeMap<&'static str, usize>, k: &str| {
            m.get(k).copied().unwrap_or(0)
        };
        let mut payers: Vec<(String, String, usize)> = v
            .by_payer
            .iter()
            .map(|(p, n)| (p.clone(), p.clone(), *n))
            .collect();
        payers.sort();
        let facets = vec![
            (
                "Status",
                choices(
                    q,
                    "status",
                    &q.status,
                    std::iter::once("open")
                        .chain(STATUS_FILTERS.map(Status::code))
                        .map(|s| {
                            (
                                s.to_string(),
                                s.to_string(),
                                v.by_status.get(s).copied().unwrap_or(0),
                            )
                        })
                        .collect(),
                ),
            ),
            (
                "Type",
                choices(
                    q,
                    "kind",
                    &q.kind,
                    [Kind::Referral, Kind::Appeal, Kind::Patient]
                        .into_iter()
                        .map(|k| {
                            (
                                k.code().to_string(),
                                k.label().to_string(),
                                count(&v.by_kind, k.code()),
                            )
                        })
                        .collect(),
                ),
            ),
            (
                "Owner",
                choices(
                    q,
                    "owner",
                    &q.owner,
                    [
                        ("me", "Mine"),
                        ("role", "My role"),
                        ("unassigned", "Unassigned"),
                    ]
                    .into_iter()
                    .map(|(c, l)| (c.to_string(), l.to_string(), count(&v.by_owner, c)))
                    .collect(),
                ),
            ),
            (
                "Due",
                choices(
                    q,
                    "due",
                    &q.due,
                    [
                        ("overdue", "Overdue"),
                        ("soon", "Within 14 days"),
                        ("none", "No deadline"),
                    ]
                    .into_iter()
                    .map(|(c, l)| (c.to_string(), l.to_string(), count(&v.by_due, c)))
                    .collect(),
                ),
            ),
            (
                "Domain",
                choices(
                    q,
                    "domain",
                    &q.domain,
                    Domain::ALL
                        .into_iter()
                        .filter(|d| v.by_domain.contains_key(d.code()))
                        .map(|d| {
                            (
                                d.code().to_string(),
                                d.label().to_string(),
                                count(&v.by_domain, d.code()),
                            )
                        })
                        .collect(),
                ),
            ),
            ("Payer", choices(q, "payer", &q.payer, payers)),
        ];
        let sorts = [
            ("deadline", "Deadline"),
            ("priority", "Priority"),
            ("updated", "Last change"),
        ]
        .into_iter()
        .map(|(c, l)| Choice {
            label: l.into(),
            href: q.with("sort", c),
            count: 0,
            chosen: filter.sort.code() == c,
        })
        .collect();
        let page = filter.page.clamp(1, v.pages);
        let rows = v
            .rows
            .iter()
            .map(|t| RowView {
                id: t.id.clone(),
                version: t.version.clone(),
                kind: t.kind.label(),
                description: t.description.clone(),
                patient: t.patient_name.clone(),
                status: t.status.clone(),
                report: t.report.words(),
                priority: t.priority.clone(),
                owner: match (&t.owner, &t.role) {
                    (Some(o), _) if o.starts_with("Practitioner/") => team
                        .iter()
                        .find(|m| &m.reference == o)
                        .map(|m| m.name.clone())
                        .or_else(|| t.owner_name.clone())
                        .unwrap_or_else(|| o.clone()),
                    (_, Some(r)) => format!("{} (role)", role_label(r).unwrap_or(r)),
                    (Some(_), None) => t.owner_name.clone().unwrap_or_default(),
                    (None, None) => String::new(),
                },
                due: t.due.map(|d| d.to_string()).unwrap_or_default(),
                due_words: due_words(t, today),
                overdue: t.is_open() && t.due.is_some_and(|d| d < today),
                mine: who.me.is_some() && t.owner == who.me,
                unassigned: t
                    .owner
                    .as_deref()
                    .is_none_or(|o| !o.starts_with("Practitioner/"))
                    && t.role.is_none(),
            })
            .collect();
        (v.total, page, v.pages, facets, sorts, rows)
    });
    let (total, page, pages, facets, sorts, rows) = page;
    let state = queue.sync_state();
    let page = QueuePage {
        launch_id: launch.id.clone(),
        csrf: launch.csrf.clone(),
        role: who
            .role
            .as_deref()
            .and_then(role_label)
            .unwrap_or("")
            .to_string(),
        query: q.with("", ""),
        synced: match state.last {
            Some((at, Ok(_))) => format!(
                "synced with the EHR at {}",
                at.time().replace_nanosecond(0).unwrap_or(at.time())
            ),
            Some((at, Err(e))) => format!(
                "the last sync at {} failed: {e}",
                at.time().replace_nanosecond(0).unwrap_or(at.time())
            ),
            None => "first sync with the EHR in progress".into(),
        },
        total,
        page,
        pages,
        prev: if page > 1 {
            q.with("page", &(page - 1).to_string())
        } else {
            String::new()
        },
        next: if page < pages {
            q.with("page", &(page + 1).to_string())
        } else {
            String::new()
        },
        facets,
        sorts,
        rows,
        team: team
            .iter()
            .map(|m| {
                (
                    m.reference.clone(),
                    format!("{} ({})", m.name, role_label(&m.role).unwrap_or(&m.role)),
                )
            })
            .collect(),
        roles: ROLES
            .iter()
            .map(|(c, l)| (format!("role:{c}"), l.to_string()))
            .collect(),
        fragment: q.fragment.is_some(),
        notice,
    };
    if page.fragment {
        return render(QueueTable {
            launch_id: &page.launch_id,
            csrf: &page.csrf,
            query: &page.query,
            total: page.total,
            page: page.page,
            pages: page.pages,
            prev: &page.prev,
            next: &page.next,
            rows: &page.rows,
            team: &page.team,
            roles: &page.roles,
            notice: &page.notice,
        });
    }
    render(page)
}

/// The table alone, for the page's script to swap in.
#[derive(Template)]
#[template(path = "queue_table.html")]
struct QueueTable<'a> {
    launch_id: &'a str,
    csrf: &'a str,
    query: &'a str,
    total: usize,
    page: usize,
    pages: usize,
    prev: &'a str,
    next: &'a str,
    rows: &'a [RowView],
    team: &'a [(String, String)],
    roles: &'a [(String, String)],
    notice: &'a Option<String>,
}

/// The live queue: one `task` event per changed Task. The stream ends with
/// its launch (signed out, or idle past the timeout: live updates do not
/// count as use), checked at each event and every few seconds between.
async fn events(
    State(state): State<AppState>,
    QuietCoordinator(coordinator): QuietCoordinator,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    use tokio::sync::broadcast::error::RecvError;
    // A Task this viewer cannot read is not even named to them; one new
    // since is named, and the table the page then fetches leaves it out.
    let hidden: std::collections::HashSet<String> = {
        let visible = coordinator.visible(&state).await?;
        coordinator
            .queue
            .with_tasks(|t| t.keys().filter(|id| !visible.allows(id)).cloned().collect())
    };
    let Coordinator { queue, launch } = coordinator;
    let rx = queue.subscribe();
    let mut recheck = tokio::time::interval(launch.sessions().recheck_every());
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold(
        (rx, launch, recheck, hidden),
        |(mut rx, launch, mut recheck, hidden)| async move {
            loop {
                let data = tokio::select! {
                    received = rx.recv() => match received {
                        Ok(task) if hidden.contains(&task) => continue,
                        Ok(task) => task,
                        // Fell behind: tell the page to refresh everything.
                        Err(RecvError::Lagged(_)) => "*".to_string(),
                        Err(RecvError::Closed) => return None,
                    },
                    _ = recheck.tick() => {
                        if !launch.sessions().still_open(&launch.id).await {
                            return None;
                        }
                        continue;
                    }
                };
                if !launch.sessions().still_open(&launch.id).await {
                    return None;
                }
                let event = Event::default().event("task").data(data);
                return Some((Ok(event), (rx, launch, recheck, hidden)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Template)]
#[template(path = "digest.html")]
struct DigestPage {
    launch_id: String,
    today: String,
    groups: Vec<(&'static str, Vec<RowView>)>,
}

async fn digest_page(
    State(state): State<AppState>,
    coordinator: Coordinator,
) -> Result<Response, AppError> {
    let visible = coordinator.visible(&state).await?;
    let Coordinator { launch, queue } = coordinator;
    let today = today();
    let team = queue.team();
    let groups = queue.with_tasks(|tasks| {
        digest(tasks.values().filter(|t| visible.allows(&t.id)), today)
            .into_iter()
            .map(|(label, list)| {
                (
                    label,
                    list.into_iter()
                        .map(|t| RowView {
                            id: t.id.clone(),
                            version: t.version.clone(),
                            kind: t.kind.label(),
                            description: t.description.clone(),
                            patient: t.patient_name.clone(),
                            status: t.status.clone(),
                            report: t.report.words(),
                            priority: t.priority.clone(),
                            owner: t
                                .owner
                                .as_ref()
                                .and_then(|o| team.iter().find(|m| &m.reference == o))
                                .map(|m| m.name.clone())
                                .or_else(|| {
                                    t.role.as_deref().and_then(role_label).map(String::from)
                                })
                                .or_else(|| t.owner_name.clone())
                                .unwrap_or_else(|| "unassigned".into()),
                            due: t.due.map(|d| d.to_string()).unwrap_or_default(),
                            due_words: due_words(t, today),
                            overdue: t.due.is_some_and(|d| d < today),
                            mine: false,
                            unassigned: false,
                        })
                        .collect(),
                )
            })
            .collect()
    });
    render(DigestPage {
        launch_id: launch.id.clone(),
        today: today.to_string(),
        groups,
    })
}

#[derive(Deserialize)]
struct ActForm {
    csrf: String,
    version: String,
    /// claim, assign or note
    action: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    note: String,
    /// The queue view to return to.
    #[serde(default)]
    back: String,
}

async fn act_on(
    State(state): State<AppState>,
    ResourceId(tid): ResourceId,
    Launched(launch): Launched,
    AxumForm(form): AxumForm<ActForm>,
) -> Result<Response, AppError> {
    check_csrf(&launch, &form.csrf)?;
    let coordinator = Coordinator::of(&state, launch)?;
    let visible = coordinator.visible(&state).await?;
    let Coordinator { launch, queue } = coordinator;
    if form.version.is_empty() {
        return Err(AppError::BadRequest(
            "Reload the queue: this row is not valid.".into(),
        ));
    }
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    // A coordinator's launch has no patient: any patient's Task is read.
    let TaskRead {
        resource: task,
        version: current,
        view,
    } = crate::fhir::task::read(&client, None, &tid).await?;
    let back: QueueQuery = serde_urlencoded_query(&form.back);
    // The row was stale: nothing is sent; the queue shows the current
    // version and says who changed what.
    if current != form.version {
        queue.written(&task);
        let notice = format!(
            "Someone changed \"{}\" while you were looking: it is now {}{}. Nothing was changed; check the row and try again.",
            view.description.as_deref().unwrap_or("this task"),
            view.status.as_deref().unwrap_or("changed"),
            assignee_name(&task)
                .map(|o| format!(", assigned to {o}"))
                .unwrap_or_default()
        );
        let page = render_queue(&launch, &queue, &back, &visible, Some(notice))?;
        return Ok((axum::http::StatusCode::CONFLICT, page).into_response());
    }
    let me = practitioner_of(&launch);
    let team = queue.team();
    let name_of = |r: &str| {
        team.iter()
            .find(|m| m.reference == r)
            .map(|m| m.name.clone())
    };
    let now = now_fhir()?;
    let to = match form.action.as_str() {
        "claim" => {
            let me = me.as_deref().ok_or_else(|| {
                AppError::BadRequest("Only a signed-in practitioner can claim a task.".into())
            })?;
            Some(FollowUp::Person {
                reference: me,
                name: name_of(me),
            })
        }
        "assign" => {
            if let Some(role) = form.to.strip_prefix("role:") {
                let label = role_label(role)
                    .ok_or_else(|| AppError::BadRequest("Unknown team role.".into()))?;
                Some(FollowUp::Role { code: role, label })
            } else {
                let name = name_of(&form.to).ok_or_else(|| {
                    AppError::BadRequest("Choose someone of the care team.".into())
                })?;
                Some(FollowUp::Person {
                    reference: &form.to,
                    name: Some(name),
                })
            }
        }
        "note" => None,
        _ => return Err(AppError::BadRequest("Choose claim, assign or note.".into())),
    };
    let note = Some(form.note.trim()).filter(|n| !n.is_empty());
    if note.is_none() && form.action == "note" {
        return Err(AppError::BadRequest("Write the note first.".into()));
    }
    let task = hand_over(
        task,
        &Handover {
            to,
            note,
            author: me.as_deref(),
            now: &now,
        },
    );
    state.schema()?.validate(&task)?;
    launch.check_write(&task)?;
    match client.update(&task, Some(&form.version)).await {
        Ok(saved) => {
            queue.written(&stamped(saved));
            Ok(
                Redirect::to(&format!("/l/{}/queue?{}", launch.id, back.with("", "")))
                    .into_response(),
            )
        }
        Err(crate::fhir::FhirError::Conflict { .. }) => {
            if let Ok(fresh) = crate::fhir::task::read(&client, None, &tid).await {
                queue.written(&fresh.resource);
            }
            let page = render_queue(
                &launch,
                &queue,
                &back,
                &visible,
                Some("Someone changed this task at the same moment. Nothing was changed; the row shows it as it is now.".into()),
            )?;
            Ok((axum::http::StatusCode::CONFLICT, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// The queue view a form came from (its query string).
fn serde_urlencoded_query(s: &str) -> QueueQuery {
    let mut q = QueueQuery::default();
    for (k, v) in url::form_urlencoded::parse(s.as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "status" => q.status = v,
            "kind" => q.kind = v,
            "owner" => q.owner = v,
            "domain" => q.domain = v,
            "payer" => q.payer = v,
            "due" => q.due = v,
            "sort" => q.sort = v,
            "page" => q.page = v.parse().ok(),
            _ => {}
        }
    }
    q
}
