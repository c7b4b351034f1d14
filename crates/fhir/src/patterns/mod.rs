//! Reading the practice's data for the patterns view, a batch of patients
//! at a time: a page of 500 Patients, then their records (coverages,
//! denials, appeals, referrals, screenings, visits) with `patient=` searches
//! of 100 ids at a time. Every measure joins records of one patient only
//! (an appeal to its denial, a referral to the positive screen before it),
//! so each batch is counted on its own ([`Accumulator::finish_raw`]) and
//! added to the total ([`Raw::merge`]); nothing of a batch is kept after it,
//! and memory does not grow with the number of patients (a batch's
//! screening records and health concerns are held together until scored,
//! since a panel's members and a sitting's items are scored as one).
//! Suppression is
//! applied once, to the total. Records of a patient the Patient search does
//! not return are not counted.
//!
//! A page stays the server's text ([`LazyPage`]); each resource is decoded
//! when its turn comes, turned into a compact record and dropped (decoded at
//! once, a page of 500 claim responses with their claims took about 24 MB).
//! Progress is shared for the page that shows it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use time::OffsetDateTime;

use super::appeal::inputs;
use super::client::{FhirClient, LazyPage};
use super::error::FhirError;
use super::{sdoh, views};
use crate::domain::evidence;
use crate::domain::patterns::{
    Accumulator, Appeal, CoverageSpan, Denial, Next, PatientFacts, Period, Raw, ReadMode, ReadPath,
    Referral, Report, Screen, Visit, id_key, postal_area,
};

mod bulk;
use crate::domain::screening::Rules;
use crate::domain::sdoh::SDOHCC_TEMPORARY_CODES;
use crate::domain::visit::{APPEAL_TASK_SYSTEM, TASK_CODE_SYSTEM};

/// Resources asked for per page.
pub const PAGE_SIZE: usize = 500;
/// Pages followed per resource type at most (5 million resources); a search
/// with more is an error, not a silently partial count.
pub const MAX_PAGES: usize = 10_000;

/// How far a computation has got, for the page that shows it.
#[derive(Debug, Default)]
pub struct Progress {
    pub stage: Mutex<String>,
    pub pages: AtomicUsize,
    pub resources: AtomicUsize,
}

impl Progress {
    pub(crate) fn stage(&self, s: &str) {
        *self.stage.lock().expect("progress lock") = s.to_string();
    }

    pub fn words(&self) -> String {
        format!(
            "{}: {} pages, {} resources read",
            self.stage.lock().expect("progress lock"),
            self.pages.load(Ordering::Relaxed),
            self.resources.load(Ordering::Relaxed)
        )
    }
}

fn instant_of(v: &Value) -> Option<OffsetDateTime> {
    let s = v.as_str()?;
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .or_else(|| views::json_date(v).map(|d| d.midnight().assume_utc()))
}

fn id_of<'a>(reference: &'a Value, kind: &str) -> Option<&'a str> {
    reference["reference"]
        .as_str()?
        .strip_prefix(kind)?
        .strip_prefix('/')
}

/// The pages of one search, read one at a time: each counted in the
/// progress, and the memory of the one before handed back.
struct Pages<'a> {
    client: &'a FhirClient,
    resource_type: &'a str,
    progress: &'a Progress,
    next: Option<LazyPage>,
    read: usize,
}

impl<'a> Pages<'a> {
    async fn start(
        client: &'a FhirClient,
        resource_type: &'a str,
        params: &[(&str, String)],
        progress: &'a Progress,
    ) -> Result<Pages<'a>, FhirError> {
        let mut params: Vec<(&str, String)> = params.to_vec();
        params.push(("_count", PAGE_SIZE.to_string()));
        let first = client.search_lazy(resource_type, &params).await?;
        Ok(Pages {
            client,
            resource_type,
            progress,
            next: Some(first),
            read: 0,
        })
    }

    /// The next page, or none when the search is done. Measures over part
    /// of the data would be wrong, not smaller: past [`MAX_PAGES`] this is
    /// a clear error rather than a truncated count.
    async fn next(&mut self, before: Option<LazyPage>) -> Result<Option<LazyPage>, FhirError> {
        let page = match (self.next.take(), before) {
            (Some(first), _) => first,
            (None, None) => return Ok(None),
            (None, Some(before)) => {
                if self.read >= MAX_PAGES && before.next.is_some() {
                    return Err(FhirError::Invalid {
                        what: format!("the {} search", self.resource_type),
                        detail: format!(
                            "more than {} {} resources, the most Passerelle reads for one search",
                            MAX_PAGES * PAGE_SIZE,
                            self.resource_type
                        ),
                    });
                }
                let next = self.client.next_lazy(&before, self.resource_type).await?;
                drop(before);
                // Each page is parsed and dropped: hand the freed memory
                // back so the process stays near its baseline whatever the
                // data's size (glibc keeps freed arenas otherwise).
                #[cfg(all(target_os = "linux", target_env = "gnu"))]
                // SAFETY: malloc_trim only releases free heap pages.
                unsafe {
                    libc::malloc_trim(0);
                }
                match next {
                    Some(page) => page,
                    None => return Ok(None),
                }
            }
        };
        self.read += 1;
        self.progress.pages.fetch_add(1, Ordering::Relaxed);
        self.progress
            .resources
            .fetch_add(page.count(self.resource_type), Ordering::Relaxed);
        Ok(Some(page))
    }
}

/// Every page of a search, each handed to `each` and dropped.
async fn each_page(
    client: &FhirClient,
    resource_type: &str,
    params: &[(&str, String)],
    progress: &Progress,
    mut each: impl FnMut(&LazyPage),
) -> Result<(), FhirError> {
    let mut pages = Pages::start(client, resource_type, params, progress).await?;
    let mut before = None;
    while let Some(page) = pages.next(before.take()).await? {
        each(&page);
        before = Some(page);
    }
    Ok(())
}

/// A coverage's plan type and payer name, for the denials made under it.
struct Plan {
    plan_type: Option<String>,
    payer: Option<String>,
}

/// Organization id → name, from the resources included in a page.
fn organization_names(page: &LazyPage) -> HashMap<String, String> {
    page.resources("Organization")
        .filter_map(|o| Some((o["id"].as_str()?.into(), o["name"].as_str()?.into())))
        .collect()
}

/// Distinct item codes whose display is remembered, at most.
const MAX_ITEM_NAMES: usize = 10_000;

/// A drug or service is counted by its code; once every batch is read, the
/// code is named with the display a Claim gave it ([`named_item`]), so a
/// hand-entered denial (which has only the typed words) counts with the
/// Claims of the same code whichever batch they are in. Never the concept's
/// free text: what a person typed does not reach a label, and so not an
/// export. A concept without a code has no label (it counts as unknown).
fn item_label(concept: &Value) -> Option<String> {
    concept["coding"][0]["code"].as_str().map(String::from)
}

/// "code display" of an item code, when a Claim named the code.
fn named_item(code: &str, names: &HashMap<String, String>) -> String {
    match names.get(code) {
        Some(display) => format!("{code} {display}"),
        None => code.to_string(),
    }
}

/// The service a referral went to, by the performer's name when the
/// performer is a service or an organization (a directory entry, a
/// HealthcareService, an Organization); a person is never named.
fn service_label(performer: &Value) -> Option<String> {
    let kind = performer["reference"]
        .as_str()
        .map(|r| r.split('/').rev().nth(1).unwrap_or_default());
    match kind {
        None | Some("HealthcareService" | "Organization") => {
            performer["display"].as_str().map(String::from)
        }
        Some(_) => Some(PERSON_PERFORMER.to_string()),
    }
}

/// The service label of a referral to a person.
const PERSON_PERFORMER: &str = "a person (not named)";

/// Whether a ClaimResponse item was paid: an adjudication `benefit` above 0.
fn item_paid(item: &Value) -> bool {
    item["adjudication"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| {
            a["category"]["coding"][0]["code"] == "benefit"
                && a["amount"]["value"].as_f64().is_some_and(|v| v > 0.0)
        })
}

/// The denial an appeal Task records in its inputs when the denial was
/// entered by hand from the payer's notice (no ClaimResponse to focus on):
/// counted like a ClaimResponse, under the id `Task/{id}`, dated by its
/// notice. Its payer is the payer of the coverage the appeal names, so it
/// counts with the same payer's ClaimResponses; without a coverage on file
/// it counts under "unknown payer" (the payer's name as typed is free text,
/// which never reaches a label).
fn hand_denial(
    task: &Value,
    id: &str,
    patient: &str,
    coverages: &HashMap<String, Plan>,
) -> Option<Denial> {
    let date = inputs(task, "notice-date").find_map(|i| views::json_date(&i["valueDate"]))?;
    let plan = id_of(&task["insurance"][0], "Coverage").and_then(|c| coverages.get(c));
    let payer = plan
        .and_then(|p| p.payer.clone())
        .unwrap_or_else(|| UNKNOWN_PAYER.into());
    Some(Denial {
        id: format!("Task/{id}"),
        patient: patient.to_string(),
        payer,
        plan_type: plan.and_then(|p| p.plan_type.clone()),
        item: inputs(task, "denied-item").find_map(|i| item_label(&i["valueCodeableConcept"])),
        reasons: inputs(task, "denial-reason")
            .filter_map(|i| i["valueCodeableConcept"]["coding"][0]["code"].as_str())
            .map(String::from)
            .collect(),
        date,
    })
}

/// The payer label of a denial that names none.
const UNKNOWN_PAYER: &str = "unknown payer";

fn sdoh_domain(categories: &Value) -> Option<String> {
    categories.as_array()?.iter().find_map(|c| {
        c["coding"].as_array()?.iter().find_map(|k| {
            (k["system"] == SDOHCC_TEMPORARY_CODES)
                .then(|| k["code"].as_str().map(String::from))
                .flatten()
        })
    })
}

/// Compute every measure for `period` from the server, by the read path
/// the client's settings allow ([`crate::bulk::BulkSettings::mode`]): a
/// Bulk Data export where the server offers one, else (or when it fails,
/// unless export is required) paged searches. The report says which.
pub async fn compute(
    client: &FhirClient,
    period: Period,
    progress: &Progress,
) -> Result<Report, FhirError> {
    compute_with(client, period, progress, client.limits.bulk.mode).await
}

/// [`compute`] by the read path `mode` allows, whatever the settings.
pub async fn compute_with(
    client: &FhirClient,
    period: Period,
    progress: &Progress,
    mode: ReadMode,
) -> Result<Report, FhirError> {
    let mut read = ReadPath::Search;
    if mode.tries_bulk() {
        match bulk::read(client, period, progress).await {
            Ok((total, item_names, unreadable)) => {
                return Ok(finish(
                    total,
                    &item_names,
                    ReadPath::Bulk { unreadable },
                    progress,
                ));
            }
            Err(outcome) => match mode.after(outcome) {
                Next::Fail(why) => return Err(FhirError::Request(why)),
                Next::Search { why } => read = ReadPath::SearchAfter { why },
            },
        }
    }
    let (total, item_names) = search_read(client, period, progress).await?;
    Ok(finish(total, &item_names, read, progress))
}

/// The total, its items named, suppressed, with the path that read it.
fn finish(
    mut total: Raw,
    item_names: &HashMap<String, String>,
    read: ReadPath,
    progress: &Progress,
) -> Report {
    progress.stage("done");
    total.rename_items(|code| named_item(code, item_names));
    let mut report = total.suppress(OffsetDateTime::now_utc());
    report.read = read;
    report
}

/// Every patient by paged searches, a page of [`PAGE_SIZE`] Patients at a
/// time, then their records: the counts before suppression and the names
/// of the items the Claims gave.
async fn search_read(
    client: &FhirClient,
    period: Period,
    progress: &Progress,
) -> Result<(Raw, HashMap<String, String>), FhirError> {
    let mut total = Raw::default();
    // Code → display of the drugs and services the Claims name, to label
    // the codes of denials entered by hand (which have only the typed words).
    let mut item_names: HashMap<String, String> = HashMap::new();
    // Hashes of the patients counted: a page that shifts (patients added
    // while the server pages by offset) must not count one twice (16 bytes
    // a patient).
    let mut seen: HashSet<u128> = HashSet::new();
    let mut pages = Pages::start(client, "Patient", &[], progress).await?;
    let mut before = None;
    progress.stage("patients");
    while let Some(page) = pages.next(before.take()).await? {
        // One batch: these patients' facts and records, counted apart and
        // added to the total; nothing of them is kept after.
        let mut acc = Accumulator::new(period);
        let mut ids: Vec<String> = Vec::new();
        for p in page.resources("Patient") {
            if let Some(id) = count_patient(&p, &mut seen, &mut acc) {
                ids.push(id);
            }
        }
        for chunk in ids.chunks(IDS_PER_SEARCH) {
            read_records(client, period, chunk, &mut acc, &mut item_names, progress).await?;
        }
        total.merge(acc.finish_raw());
        before = Some(page);
        progress.stage("patients");
    }
    Ok((total, item_names))
}

/// Patients whose records one search asks for (`patient=` with their ids).
pub(crate) const IDS_PER_SEARCH: usize = 100;

/// The records of `ids` (their coverages, denials, appeals, referrals,
/// screenings and visits), each search restricted to them, into `acc`.
async fn read_records(
    client: &FhirClient,
    period: Period,
    ids: &[String],
    acc: &mut Accumulator,
    item_names: &mut HashMap<String, String>,
    progress: &Progress,
) -> Result<(), FhirError> {
    let who = ids
        .iter()
        .map(|id| format!("Patient/{id}"))
        .collect::<Vec<_>>()
        .join(",");
    progress.stage("coverage");
    // Coverage id → its plan type and payer, for the denials.
    let mut coverages: HashMap<String, Plan> = HashMap::new();
    let q = [
        ("beneficiary", who.clone()),
        ("_include", "Coverage:payor".to_string()),
    ];
    each_page(client, "Coverage", &q, progress, |page| {
        count_coverages(
            page.resources("Coverage"),
            &organization_names(page),
            &mut coverages,
            acc,
        );
    })
    .await?;

    progress.stage("denials");
    let period_q = |param: &'static str| {
        vec![
            (param, format!("ge{}", period.start)),
            (param, format!("le{}", period.end)),
        ]
    };
    let mut q = period_q("created");
    q.push(("patient", who.clone()));
    q.push(("_include", "ClaimResponse:request".into()));
    q.push(("_include", "ClaimResponse:insurer".into()));
    each_page(client, "ClaimResponse", &q, progress, |page| {
        let claims = claims(page.resources("Claim"), item_names);
        count_denials(
            page.resources("ClaimResponse"),
            &claims,
            &organization_names(page),
            &coverages,
            acc,
        );
    })
    .await?;

    read_tasks(client, &who, &coverages, acc, progress).await?;
    drop(coverages);

    progress.stage("screenings");
    // The same reader as the visit page: screenings in any standard shape
    // (panels, other systems' QuestionnaireResponses, totals, no
    // interpretation) and health concerns, each result counted once.
    let rules = Rules::shared();
    let [by_category, by_code, responses, conditions] = sdoh::population_searches(rules, &who);
    let mut found: [Vec<Value>; 4] = Default::default();
    for ((resource_type, params), into) in [by_category, by_code, responses, conditions]
        .into_iter()
        .zip(found.iter_mut())
    {
        each_page(client, resource_type, &params, progress, |page| {
            into.extend(page.resources(resource_type));
        })
        .await?;
    }
    let [mut observations, by_code, responses, conditions] = found;
    observations.extend(by_code);
    count_screens(rules, &observations, &responses, &conditions, acc);

    progress.stage("visits");
    let mut q = period_q("date");
    q.push(("patient", who));
    each_page(client, "Encounter", &q, progress, |page| {
        count_visits(page.resources("Encounter"), acc)
    })
    .await?;

    Ok(())
}

/// The appeal and referral Tasks of the patients `who` (`Patient/id`,
/// comma-separated) by search, into `acc`: on both read paths, as Task is
/// not in the R4 Patient compartment and so not in a Patient- or
/// Group-level export of every server (FHIR R4
/// compartmentdefinition-patient; Bulk Data IG `_type`).
async fn read_tasks(
    client: &FhirClient,
    who: &str,
    plans: &HashMap<String, Plan>,
    acc: &mut Accumulator,
    progress: &Progress,
) -> Result<(), FhirError> {
    progress.stage("appeals");
    each_page(
        client,
        "Task",
        &[
            ("code", format!("{APPEAL_TASK_SYSTEM}|")),
            ("patient", who.to_string()),
        ],
        progress,
        |page| count_appeals(page.resources("Task"), plans, acc),
    )
    .await?;

    progress.stage("referrals");
    each_page(
        client,
        "Task",
        &[
            ("code", format!("{TASK_CODE_SYSTEM}|fulfill")),
            ("patient", who.to_string()),
            ("_include", "Task:focus".into()),
        ],
        progress,
        |page| {
            let requests = service_requests(page.resources("ServiceRequest"));
            count_referrals(page.resources("Task"), &requests, acc);
        },
    )
    .await
}

// The counting of one batch's records, the same whichever read path (paged
// searches or a Bulk Data export) brought them.

/// A Patient's facts into `acc`, unless already counted; its id.
fn count_patient(p: &Value, seen: &mut HashSet<u128>, acc: &mut Accumulator) -> Option<String> {
    let id = p["id"].as_str()?;
    if !seen.insert(id_key(id)) {
        return None;
    }
    let language = p["communication"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["preferred"] == true)
                .or(c.first())
                .and_then(|c| c["language"]["coding"][0]["code"].as_str())
        })
        .map(|l| l.split('-').next().unwrap_or(l).to_lowercase());
    acc.patient(
        id,
        PatientFacts {
            postal_area: p["address"][0]["postalCode"].as_str().and_then(postal_area),
            language,
            sex: p["gender"].as_str().map(String::from),
            birth_date: views::json_date(&p["birthDate"]),
        },
    );
    Some(id.to_string())
}

/// Coverages into `acc`, and each one's plan into `plans` (for the denials
/// made under it); `names`: Organization id → name, for the payer.
fn count_coverages(
    coverages: impl Iterator<Item = Value>,
    names: &HashMap<String, String>,
    plans: &mut HashMap<String, Plan>,
    acc: &mut Accumulator,
) {
    for c in coverages {
        let Some(patient) = id_of(&c["beneficiary"], "Patient") else {
            continue;
        };
        let payer = id_of(&c["payor"][0], "Organization").and_then(|o| names.get(o).cloned());
        if let Some(id) = c["id"].as_str() {
            let plan = Plan {
                plan_type: c["type"]["coding"][0]["display"]
                    .as_str()
                    .or(c["type"]["coding"][0]["code"].as_str())
                    .map(String::from),
                payer: payer.clone(),
            };
            plans.insert(id.to_string(), plan);
        }
        acc.coverage(CoverageSpan {
            patient: patient.to_string(),
            start: views::json_date(&c["period"]["start"]),
            end: views::json_date(&c["period"]["end"]),
            active: c["status"] == "active",
            payer,
        });
    }
}

/// Claim id → (the item denied, the coverage id); each item code's display
/// remembered in `item_names`.
fn claims(
    claims: impl Iterator<Item = Value>,
    item_names: &mut HashMap<String, String>,
) -> HashMap<String, (Option<String>, Option<String>)> {
    claims
        .filter_map(|c| {
            let concept = &c["item"][0]["productOrService"];
            if let (Some(code), Some(display)) = (
                concept["coding"][0]["code"].as_str(),
                concept["coding"][0]["display"].as_str(),
            ) && item_names.len() < MAX_ITEM_NAMES
            {
                item_names
                    .entry(code.to_string())
                    .or_insert_with(|| display.to_string());
            }
            let item = item_label(concept);
            let coverage = id_of(&c["insurance"][0]["coverage"], "Coverage").map(String::from);
            Some((c["id"].as_str()?.to_string(), (item, coverage)))
        })
        .collect()
}

/// ClaimResponses into `acc` as denials: those with a reason on an item
/// not paid, or an error.
fn count_denials(
    responses: impl Iterator<Item = Value>,
    claims: &HashMap<String, (Option<String>, Option<String>)>,
    names: &HashMap<String, String>,
    plans: &HashMap<String, Plan>,
    acc: &mut Accumulator,
) {
    for cr in responses {
        // Reasons of the items not paid: an adjustment reason on a
        // paid item (a contractual write-off) is not a denial.
        let reasons: Vec<String> = cr["item"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| !item_paid(i))
            .flat_map(|i| i["adjudication"].as_array().into_iter().flatten())
            .filter_map(|a| a["reason"]["coding"][0]["code"].as_str().map(String::from))
            .chain(
                cr["error"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["code"]["coding"][0]["code"].as_str().map(String::from)),
            )
            .collect();
        if reasons.is_empty() && cr["outcome"] != "error" {
            continue;
        }
        let (Some(id), Some(patient), Some(date)) = (
            cr["id"].as_str(),
            id_of(&cr["patient"], "Patient"),
            views::json_date(&cr["created"]),
        ) else {
            continue;
        };
        let claim = id_of(&cr["request"], "Claim").and_then(|c| claims.get(c));
        let item = claim.and_then(|(item, _)| item.clone());
        let plan_type = claim
            .and_then(|(_, coverage)| coverage.as_deref())
            .and_then(|cov| plans.get(cov))
            .and_then(|plan| plan.plan_type.clone());
        let payer = id_of(&cr["insurer"], "Organization")
            .and_then(|o| names.get(o).cloned())
            .or_else(|| cr["insurer"]["display"].as_str().map(String::from))
            .unwrap_or_else(|| UNKNOWN_PAYER.into());
        acc.denial(Denial {
            id: id.to_string(),
            patient: patient.to_string(),
            payer,
            plan_type,
            item,
            reasons,
            date,
        });
    }
}

/// Appeal Tasks into `acc` (and the denial each records when it was
/// entered by hand).
fn count_appeals(
    tasks: impl Iterator<Item = Value>,
    plans: &HashMap<String, Plan>,
    acc: &mut Accumulator,
) {
    for t in tasks {
        let (Some(id), Some(patient), Some(filed)) = (
            t["id"].as_str(),
            id_of(&t["for"], "Patient"),
            instant_of(&t["authoredOn"]),
        ) else {
            continue;
        };
        let kind = t["code"]["coding"][0]["code"].as_str().unwrap_or_default();
        let outcome = t["output"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["type"]["coding"][0]["code"] == "appeal-outcome")
            .and_then(|o| o["valueCodeableConcept"]["coding"][0]["code"].as_str())
            .map(String::from);
        let mut denial = id_of(&t["focus"], "ClaimResponse").map(String::from);
        if denial.is_none()
            && let Some(hand) = hand_denial(&t, id, patient, plans)
        {
            denial = Some(hand.id.clone());
            acc.denial(hand);
        }
        let decided = (t["status"] == "completed")
            .then(|| {
                instant_of(&t["executionPeriod"]["end"]).or_else(|| instant_of(&t["lastModified"]))
            })
            .flatten();
        acc.appeal(Appeal {
            id: id.to_string(),
            patient: patient.to_string(),
            denial,
            kind: kind.to_string(),
            expedited: t["priority"] == "stat" || kind == "expedited-appeal",
            filed,
            decided,
            outcome,
            status: t["status"].as_str().unwrap_or_default().to_string(),
        });
    }
}

/// ServiceRequest id → (SDOH domain, service).
fn service_requests(
    requests: impl Iterator<Item = Value>,
) -> HashMap<String, (Option<String>, Option<String>)> {
    requests
        .filter_map(|s| {
            Some((
                s["id"].as_str()?.to_string(),
                (
                    sdoh_domain(&s["category"]),
                    service_label(&s["performer"][0]),
                ),
            ))
        })
        .collect()
}

/// Referral Tasks (those that focus a ServiceRequest) into `acc`.
fn count_referrals(
    tasks: impl Iterator<Item = Value>,
    requests: &HashMap<String, (Option<String>, Option<String>)>,
    acc: &mut Accumulator,
) {
    for t in tasks {
        // Tasks for the patient share the code; referrals focus a ServiceRequest.
        let Some(sr) = id_of(&t["focus"], "ServiceRequest") else {
            continue;
        };
        let (Some(id), Some(patient), Some(authored)) = (
            t["id"].as_str(),
            id_of(&t["for"], "Patient"),
            views::json_date(&t["authoredOn"]),
        ) else {
            continue;
        };
        let sr = requests.get(sr);
        let status = t["status"].as_str().unwrap_or_default();
        acc.referral(Referral {
            id: id.to_string(),
            patient: patient.to_string(),
            domain: sr.and_then(|(domain, _)| domain.clone()),
            service: sr.and_then(|(_, service)| service.clone()),
            authored,
            accepted: views::json_date(&t["executionPeriod"]["start"]),
            closed: (status == "completed")
                .then(|| {
                    views::json_date(&t["executionPeriod"]["end"])
                        .or_else(|| views::json_date(&t["lastModified"]))
                })
                .flatten(),
            status: status.to_string(),
        });
    }
}

/// A batch's screening records and health concerns, scored by the same
/// reader as the visit page (screenings in any standard shape: panels,
/// other systems' QuestionnaireResponses, totals, no interpretation; each
/// result counted once), into `acc`.
fn count_screens(
    rules: &Rules,
    observations: &[Value],
    responses: &[Value],
    conditions: &[Value],
    acc: &mut Accumulator,
) {
    for (patient, evidence) in sdoh::evidence_by_patient(observations, responses, conditions) {
        for r in evidence::results(rules, &evidence) {
            let Some(date) = r.date else { continue };
            acc.screen(Screen {
                patient: patient.clone(),
                date,
                domain: r.domain.code().to_string(),
                positive: r.positive(),
            });
        }
    }
}

/// Encounters into `acc` as visits, on the day they started.
fn count_visits(encounters: impl Iterator<Item = Value>, acc: &mut Accumulator) {
    for e in encounters {
        if let (Some(patient), Some(date)) = (
            id_of(&e["subject"], "Patient"),
            views::json_date(&e["period"]["start"]),
        ) {
            acc.visit(Visit {
                patient: patient.to_string(),
                date,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn appeal_task(insurance: Option<&str>) -> Value {
        let mut t = json!({
            "resourceType": "Task", "id": "a1", "status": "requested",
            "for": { "reference": "Patient/p1" },
            "input": [
                { "type": { "coding": [{ "code": "notice-date" }] }, "valueDate": "2026-10-02" },
                { "type": { "coding": [{ "code": "payer" }] }, "valueString": "  Keystone   Rx " },
                { "type": { "coding": [{ "code": "denied-item" }] }, "valueCodeableConcept": {
                    "coding": [{ "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1364445" }],
                    "text": "apixaban 5 MG Oral Tablet" } },
                { "type": { "coding": [{ "code": "denial-reason" }] }, "valueCodeableConcept": { "coding": [{ "code": "50" }] } },
                { "type": { "coding": [{ "code": "denial-reason" }] }, "valueCodeableConcept": { "coding": [{ "code": "N386" }] } },
                { "type": { "coding": [{ "code": "denial-text" }] }, "valueString": "Not medically necessary for this member." }
            ]
        });
        if let Some(c) = insurance {
            t["insurance"] = json!([{ "reference": c }]);
        }
        t
    }

    #[test]
    fn a_denial_entered_by_hand_counts_under_its_coverages_payer_and_keeps_no_free_text() {
        let coverages = HashMap::from([(
            "c1".to_string(),
            Plan {
                plan_type: Some("Medicare HMO".into()),
                payer: Some("Harbor Medicare Advantage".into()),
            },
        )]);
        let t = appeal_task(Some("Coverage/c1"));
        let d = hand_denial(&t, "a1", "p1", &coverages).unwrap();
        assert_eq!(
            d,
            Denial {
                id: "Task/a1".into(),
                patient: "p1".into(),
                payer: "Harbor Medicare Advantage".into(),
                plan_type: Some("Medicare HMO".into()),
                item: Some("1364445".into()),
                reasons: vec!["50".into(), "N386".into()],
                date: time::macros::date!(2026 - 10 - 02),
            }
        );

        // No coverage on file: an unknown payer (what was typed is free
        // text); the item is its code (named later from the Claims).
        let d = hand_denial(&appeal_task(Some("Coverage/gone")), "a1", "p1", &coverages).unwrap();
        assert_eq!(d.payer, UNKNOWN_PAYER);
        assert_eq!(d.plan_type, None);
        assert_eq!(d.item.as_deref(), Some("1364445"));
        let words = format!("{d:?}");
        for typed in ["Keystone", "apixaban", "medically"] {
            assert!(!words.contains(typed), "{typed} kept");
        }

        // An appeal without a notice date records no denial of its own.
        let mut t = appeal_task(None);
        t["input"].as_array_mut().unwrap().remove(0);
        assert_eq!(hand_denial(&t, "a1", "p1", &coverages), None);
    }

    #[test]
    fn labels_come_from_codes_and_services_never_from_typed_words_or_people() {
        let concept = json!({ "coding": [{ "code": "72148", "display": "MRI lumbar spine" }], "text": "MRI for Jane" });
        assert_eq!(item_label(&concept).as_deref(), Some("72148"));
        assert_eq!(item_label(&json!({ "text": "MRI for Jane" })), None);
        let names = HashMap::from([("72148".to_string(), "MRI lumbar spine".to_string())]);
        assert_eq!(named_item("72148", &names), "72148 MRI lumbar spine");
        assert_eq!(named_item("E0601", &names), "E0601");

        let service = |p: Value| service_label(&p);
        assert_eq!(
            service(json!({ "identifier": { "value": "s1" }, "display": "Eastside Food Pantry" }))
                .as_deref(),
            Some("Eastside Food Pantry")
        );
        assert_eq!(
            service(json!({ "reference": "HealthcareService/h1", "display": "Ride Line" }))
                .as_deref(),
            Some("Ride Line")
        );
        assert_eq!(
            service(json!({ "reference": "Practitioner/x", "display": "Dr Jane Roe" })).as_deref(),
            Some(PERSON_PERFORMER)
        );
        assert_eq!(
            service(json!({ "reference": "http://h/fhir/RelatedPerson/r", "display": "Sam Roe" }))
                .as_deref(),
            Some(PERSON_PERFORMER)
        );
    }

    #[test]
    fn only_unpaid_items_give_denial_reasons() {
        let paid = json!({ "adjudication": [
            { "category": { "coding": [{ "code": "benefit" }] }, "amount": { "value": 12.5 } },
            { "category": { "coding": [{ "code": "submitted" }] }, "reason": { "coding": [{ "code": "45" }] } }
        ] });
        let zero = json!({ "adjudication": [
            { "category": { "coding": [{ "code": "benefit" }] }, "amount": { "value": 0 } }
        ] });
        assert!(item_paid(&paid));
        assert!(!item_paid(&zero));
        assert!(!item_paid(&json!({})));
    }
}
