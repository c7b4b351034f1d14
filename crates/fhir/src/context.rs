//! Loading a visit's context: every read and search is sent at once, so the
//! wall time is about one FHIR round trip, not the sum of ten.
//!
//! The Patient is required (without it there is no page); every other
//! section that fails shows its own clear message while the others show.

use std::collections::HashMap;

use fhir_sdk::r4b::resources::{
    Claim, ClaimResponse, Coverage, Encounter, Organization, Patient, ServiceRequest, Task,
};
use fhir_sdk::r4b::types::Reference;
use time::Date;

use super::client::{Decoded, FhirClient, SearchPage};
use super::error::FhirError;
use super::sdoh;
use super::views;
use crate::domain::coverage::{RegimeTable, assess};
use crate::domain::evidence::{self, ConditionCodes};
use crate::domain::referral::Status;
use crate::domain::screening::Rules;
use crate::domain::visit::{
    Concern, Section, SectionError, TaskKind, TaskSummary, VisitContext, pair_referrals,
    sort_concerns,
};

/// How many resources of each kind one visit page asks for.
const PAGE: &str = "100";

/// How the requests of a visit are sent. [`Fetch::Sequential`] sends exactly
/// the same requests one after another: it exists as the benchmark's baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    Concurrent,
    Sequential,
}

/// Load the visit context of `patient_id` (and `encounter_id`, if given).
pub async fn load_visit(
    client: &FhirClient,
    patient_id: &str,
    encounter_id: Option<&str>,
    regimes: &RegimeTable,
    today: Date,
) -> Result<VisitContext, FhirError> {
    load_visit_with(
        client,
        patient_id,
        encounter_id,
        regimes,
        today,
        Fetch::Concurrent,
    )
    .await
}

/// [`load_visit`], choosing how the requests are sent.
pub async fn load_visit_with(
    client: &FhirClient,
    patient_id: &str,
    encounter_id: Option<&str>,
    regimes: &RegimeTable,
    today: Date,
    fetch: Fetch,
) -> Result<VisitContext, FhirError> {
    let subject = format!("Patient/{patient_id}");
    // Tasks worth showing as open work (everything not closed).
    let open_tasks = Status::OPEN.map(Status::code).join(",");
    // Referrals the service closed lately: what came of them shows too.
    let closed_tasks = Status::CLOSED.map(Status::code).join(",");
    let closed_since = format!(
        "ge{}",
        today - time::Duration::days(crate::domain::visit::RECENTLY_CLOSED_DAYS)
    );
    let by_subject = |extra: &[(&'static str, &str)]| {
        let mut p: Vec<(&str, String)> = vec![("_count", PAGE.to_string())];
        p.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        p
    };
    let mut searches: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "Coverage",
            by_subject(&[("beneficiary", &subject), ("_include", "Coverage:payor")]),
        ),
        (
            "ServiceRequest",
            by_subject(&[("subject", &subject), ("status", "draft,active,on-hold")]),
        ),
        (
            "Task",
            by_subject(&[("patient", &subject), ("status", &open_tasks)]),
        ),
        (
            "Task",
            by_subject(&[
                ("patient", &subject),
                ("status", &closed_tasks),
                ("_lastUpdated", &closed_since),
            ]),
        ),
        (
            "ClaimResponse",
            by_subject(&[
                ("patient", &subject),
                ("_include", "ClaimResponse:request"),
                ("_include", "ClaimResponse:insurer"),
            ]),
        ),
    ];
    // The SDOH evidence: the same four searches as every other reader of it.
    searches.extend(sdoh::searches(Rules::shared(), &subject));
    let latest_encounter_q = [
        ("subject", subject.clone()),
        ("_sort", "-date".into()),
        ("_count", "1".into()),
    ];
    let read_patient = client.read::<Patient>("Patient", patient_id);
    let read_encounter = async {
        match encounter_id {
            Some(id) => client
                .read::<Encounter>("Encounter", id)
                .await
                .map(|v| Some(v.resource)),
            // Opened without an encounter: show the patient's latest one.
            None => client
                .search("Encounter", &latest_encounter_q)
                .await
                .map(|page| {
                    page.resources::<Encounter>("Encounter")
                        .items
                        .into_iter()
                        .next()
                }),
        }
    };
    let (patient, encounter, pages) = match fetch {
        Fetch::Concurrent => {
            tokio::join!(
                read_patient,
                read_encounter,
                futures::future::join_all(searches.iter().map(|(t, q)| client.search(t, q)))
            )
        }
        Fetch::Sequential => {
            let patient = read_patient.await;
            let encounter = read_encounter.await;
            let mut pages = Vec::new();
            for (t, q) in &searches {
                pages.push(client.search(t, q).await);
            }
            (patient, encounter, pages)
        }
    };
    let [
        coverages,
        requests,
        tasks,
        closed,
        claims,
        obs_by_category,
        obs_by_code,
        responses,
        conditions,
    ]: [_; 9] = pages.try_into().expect("one page per search");
    let patient = views::patient(&patient?.resource);
    let mut skipped: Vec<(String, usize)> = Vec::new();
    let mut note_skipped = |t: &str, n: usize| {
        if n > 0 {
            skipped.push((t.to_string(), n));
        }
    };

    let encounter = match encounter {
        Ok(found) => found.map(|e| Ok(views::encounter(&e))),
        Err(e) => Some(Err(section_error("The encounter", &e))),
    };

    let coverage = coverages
        .map_err(|e| section_error("Coverage", &e))
        .map(|page| {
            let names = organization_names(&page, &mut note_skipped);
            let decoded: Decoded<Coverage> = page.resources("Coverage");
            note_skipped("Coverage", decoded.skipped);
            let facts = decoded
                .items
                .iter()
                .map(|c| views::coverage(c, |r| lookup(&names, r)))
                .collect();
            assess(facts, regimes, today)
        });

    // Concerns show when their search answered; the domains' states need
    // every evidence search (a partial record could hide a positive).
    let concerns: Section<Vec<Concern>> = conditions
        .as_ref()
        .map_err(|e| section_error("Health concerns", e))
        .map(|page| {
            let codes = ConditionCodes::shipped();
            let mut concerns: Vec<Concern> = page
                .raw("Condition")
                .filter_map(|c| sdoh::concern(c, codes))
                .collect();
            sort_concerns(&mut concerns);
            concerns
        });
    let screenings = match (obs_by_category, obs_by_code, responses, conditions) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => Ok(evidence::read(
            Rules::shared(),
            &sdoh::evidence(&a, &b, &c, &d),
        )),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            Err(section_error("Screening results", &e))
        }
    };

    let mut summaries = |page: SearchPage| -> Vec<TaskSummary> {
        let reports: HashMap<String, _> = page
            .raw("Task")
            .filter_map(|t| Some((t["id"].as_str()?.to_string(), super::task::report(t))))
            .collect();
        let decoded: Decoded<Task> = page.resources("Task");
        note_skipped("Task", decoded.skipped);
        decoded
            .items
            .iter()
            .map(|t| {
                let mut summary = views::task(t, &subject);
                summary.report = reports.get(&summary.id).cloned().unwrap_or_default();
                summary
            })
            .collect()
    };
    let task_list: Section<Vec<TaskSummary>> = tasks
        .map_err(|e| section_error("Tasks", &e))
        .map(&mut summaries);
    let closed_referrals: Section<Vec<TaskSummary>> = closed
        .map_err(|e| section_error("Closed referrals", &e))
        .map(|page| {
            summaries(page)
                .into_iter()
                .filter(|t| t.kind == TaskKind::Referral)
                .collect()
        });

    let referrals = match (requests, &task_list) {
        (Ok(page), Ok(tasks)) => {
            let decoded: Decoded<ServiceRequest> = page.resources("ServiceRequest");
            note_skipped("ServiceRequest", decoded.skipped);
            Ok(pair_referrals(
                decoded.items.iter().map(views::referral).collect(),
                tasks,
            ))
        }
        (Err(e), _) => Err(section_error("Referrals", &e)),
        (_, Err(e)) => Err(e.clone()),
    };
    let of_kind = |pred: fn(&TaskKind) -> bool| {
        task_list
            .clone()
            .map(|ts| ts.into_iter().filter(|t| pred(&t.kind)).collect::<Vec<_>>())
    };
    let appeals = of_kind(|k| matches!(k, TaskKind::Appeal(_)));
    let patient_tasks = of_kind(|k| matches!(k, TaskKind::Patient));

    let denials = claims
        .map_err(|e| section_error("Denials", &e))
        .map(|page| {
            let names = organization_names(&page, &mut note_skipped);
            let claims: Decoded<Claim> = page.resources("Claim");
            let services: HashMap<String, String> = claims
                .items
                .iter()
                .filter_map(|c| {
                    let id = c.id.clone()?;
                    let item = c.item.iter().flatten().next()?;
                    Some((
                        format!("Claim/{id}"),
                        views::concept_text(&item.product_or_service)?,
                    ))
                })
                .collect();
            let decoded: Decoded<ClaimResponse> = page.resources("ClaimResponse");
            note_skipped("ClaimResponse", decoded.skipped);
            let mut list: Vec<_> = decoded
                .items
                .iter()
                .filter_map(|c| {
                    let service = c
                        .request
                        .as_ref()
                        .and_then(|r| r.reference.as_ref())
                        .and_then(|r| services.get(r))
                        .cloned();
                    views::denial(c, |r| lookup(&names, r), service)
                })
                .collect();
            list.sort_by_key(|d| std::cmp::Reverse(d.created));
            list
        });

    Ok(VisitContext {
        patient,
        encounter,
        coverage,
        screenings,
        concerns,
        referrals,
        closed_referrals,
        appeals,
        patient_tasks,
        denials,
        skipped,
    })
}

fn section_error(what: &str, err: &FhirError) -> SectionError {
    SectionError {
        message: format!("{what} could not be loaded. {err}"),
    }
}

/// `Organization/id` → name, from the Organizations a search `_include`d.
pub fn organization_names(
    page: &SearchPage,
    note_skipped: &mut impl FnMut(&str, usize),
) -> HashMap<String, String> {
    let orgs: Decoded<Organization> = page.resources("Organization");
    note_skipped("Organization", orgs.skipped);
    orgs.items
        .iter()
        .filter_map(|o| Some((format!("Organization/{}", o.id.clone()?), o.name.clone()?)))
        .collect()
}

/// The name of the Organization `r` refers to, from [`organization_names`].
pub fn lookup(names: &HashMap<String, String>, r: &Reference) -> Option<String> {
    r.reference.as_ref().and_then(|k| names.get(k)).cloned()
}
