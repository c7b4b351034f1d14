//! Reading the practice's data for the patterns view: one paged search per
//! resource type (500 a page). A page stays the server's text
//! ([`LazyPage`]); each resource is decoded when its turn comes, turned into
//! the compact records of [`crate::domain::patterns`] and dropped, and the
//! page is dropped before the next is read, so the memory does not grow with
//! the number of resources (decoded at once, a page of 500 claim responses
//! with their claims took about 24 MB). Progress is shared
//! for the page that shows it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use time::OffsetDateTime;

use super::client::{FhirClient, LazyPage};
use super::error::FhirError;
use super::views;
use crate::domain::patterns::{
    Accumulator, Appeal, CoverageSpan, Denial, PatientFacts, Period, Referral, Report, Screen,
    Visit,
};
use crate::domain::sdoh::SDOHCC_TEMPORARY_CODES;
use crate::domain::visit::{APPEAL_TASK_SYSTEM, TASK_CODE_SYSTEM};

/// Resources asked for per page.
pub const PAGE_SIZE: usize = 500;
/// Pages followed per resource type at most (5 million resources).
pub const MAX_PAGES: usize = 10_000;

/// How far a computation has got, for the page that shows it.
#[derive(Debug, Default)]
pub struct Progress {
    pub stage: Mutex<String>,
    pub pages: AtomicUsize,
    pub resources: AtomicUsize,
}

impl Progress {
    fn stage(&self, s: &str) {
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

/// Every page of a search, each handed to `each` and dropped.
async fn each_page(
    client: &FhirClient,
    resource_type: &str,
    params: &[(&str, String)],
    progress: &Progress,
    mut each: impl FnMut(&LazyPage),
) -> Result<(), FhirError> {
    let mut params: Vec<(&str, String)> = params.to_vec();
    params.push(("_count", PAGE_SIZE.to_string()));
    let mut page = client.search_lazy(resource_type, &params).await?;
    for pages in 1.. {
        progress.pages.fetch_add(1, Ordering::Relaxed);
        progress
            .resources
            .fetch_add(page.count(resource_type), Ordering::Relaxed);
        each(&page);
        // Each page is parsed and dropped: hand the freed memory back so
        // the process stays near its baseline whatever the data's size
        // (glibc keeps freed arenas otherwise).
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free heap pages.
        unsafe {
            libc::malloc_trim(0);
        }
        if pages >= MAX_PAGES {
            break;
        }
        match client.next_lazy(&page, resource_type).await? {
            Some(next) => page = next,
            None => break,
        }
    }
    Ok(())
}

fn sdoh_domain(categories: &Value) -> Option<String> {
    categories.as_array()?.iter().find_map(|c| {
        c["coding"].as_array()?.iter().find_map(|k| {
            (k["system"] == SDOHCC_TEMPORARY_CODES)
                .then(|| k["code"].as_str().map(String::from))
                .flatten()
        })
    })
}

/// Compute every measure for `period` from the server.
pub async fn compute(
    client: &FhirClient,
    period: Period,
    progress: &Progress,
) -> Result<Report, FhirError> {
    let mut acc = Accumulator::new(period);

    progress.stage("patients");
    each_page(client, "Patient", &[], progress, |page| {
        for p in page.resources("Patient") {
            let Some(id) = p["id"].as_str() else { continue };
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
                    postal_area: p["address"][0]["postalCode"]
                        .as_str()
                        .filter(|z| z.len() >= 3)
                        .map(|z| z[..3].to_string()),
                    language,
                    sex: p["gender"].as_str().map(String::from),
                    birth_date: views::json_date(&p["birthDate"]),
                },
            );
        }
    })
    .await?;

    progress.stage("coverage");
    // Coverage id → plan type label, for the denials' plan type.
    let mut plan_types: HashMap<String, String> = HashMap::new();
    each_page(client, "Coverage", &[], progress, |page| {
        for c in page.resources("Coverage") {
            let Some(patient) = id_of(&c["beneficiary"], "Patient") else {
                continue;
            };
            if let (Some(id), Some(label)) = (
                c["id"].as_str(),
                c["type"]["text"]
                    .as_str()
                    .or(c["type"]["coding"][0]["display"].as_str()),
            ) {
                plan_types.insert(id.to_string(), label.to_string());
            }
            acc.coverage(CoverageSpan {
                patient: patient.to_string(),
                start: views::json_date(&c["period"]["start"]),
                end: views::json_date(&c["period"]["end"]),
                active: c["status"] == "active",
            });
        }
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
    q.push(("_include", "ClaimResponse:request".into()));
    q.push(("_include", "ClaimResponse:insurer".into()));
    each_page(client, "ClaimResponse", &q, progress, |page| {
        let names: HashMap<String, String> = page
            .resources("Organization")
            .filter_map(|o| Some((o["id"].as_str()?.into(), o["name"].as_str()?.into())))
            .collect();
        // Claim id → (the item denied, the coverage id).
        let claims: HashMap<String, (Option<String>, Option<String>)> = page
            .resources("Claim")
            .filter_map(|c| {
                let k = &c["item"][0]["productOrService"];
                let code = k["coding"][0]["code"].as_str();
                let words = k["coding"][0]["display"].as_str().or(k["text"].as_str());
                let item = match (code, words) {
                    (Some(c), Some(w)) => Some(format!("{c} {w}")),
                    (Some(c), None) => Some(c.to_string()),
                    (None, Some(w)) => Some(w.to_string()),
                    (None, None) => None,
                };
                let coverage = id_of(&c["insurance"][0]["coverage"], "Coverage").map(String::from);
                Some((c["id"].as_str()?.to_string(), (item, coverage)))
            })
            .collect();
        for cr in page.resources("ClaimResponse") {
            let reasons: Vec<String> = cr["item"]
                .as_array()
                .into_iter()
                .flatten()
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
                .and_then(|cov| plan_types.get(cov).cloned());
            let payer = id_of(&cr["insurer"], "Organization")
                .and_then(|o| names.get(o).cloned())
                .or_else(|| cr["insurer"]["display"].as_str().map(String::from))
                .unwrap_or_else(|| "unknown payer".into());
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
    })
    .await?;
    drop(plan_types);

    progress.stage("appeals");
    each_page(
        client,
        "Task",
        &[("code", format!("{APPEAL_TASK_SYSTEM}|"))],
        progress,
        |page| {
            for t in page.resources("Task") {
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
                let decided = (t["status"] == "completed")
                    .then(|| {
                        instant_of(&t["executionPeriod"]["end"])
                            .or_else(|| instant_of(&t["lastModified"]))
                    })
                    .flatten();
                acc.appeal(Appeal {
                    id: id.to_string(),
                    patient: patient.to_string(),
                    denial: id_of(&t["focus"], "ClaimResponse").map(String::from),
                    kind: kind.to_string(),
                    expedited: t["priority"] == "stat" || kind == "expedited-appeal",
                    filed,
                    decided,
                    outcome,
                    status: t["status"].as_str().unwrap_or_default().to_string(),
                });
            }
        },
    )
    .await?;

    progress.stage("referrals");
    each_page(
        client,
        "Task",
        &[
            ("code", format!("{TASK_CODE_SYSTEM}|fulfill")),
            ("_include", "Task:focus".into()),
        ],
        progress,
        |page| {
            // ServiceRequest id → (SDOH domain, service).
            let requests: HashMap<String, (Option<String>, Option<String>)> = page
                .resources("ServiceRequest")
                .filter_map(|s| {
                    Some((
                        s["id"].as_str()?.to_string(),
                        (
                            sdoh_domain(&s["category"]),
                            s["performer"][0]["display"].as_str().map(String::from),
                        ),
                    ))
                })
                .collect();
            for t in page.resources("Task") {
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
        },
    )
    .await?;

    progress.stage("screenings");
    each_page(
        client,
        "Observation",
        &[("category", "sdoh".into())],
        progress,
        |page| {
            for o in page.resources("Observation") {
                let (Some(patient), Some(date), Some(domain)) = (
                    id_of(&o["subject"], "Patient"),
                    views::json_date(&o["effectiveDateTime"])
                        .or_else(|| views::json_date(&o["issued"])),
                    sdoh_domain(&o["category"]),
                ) else {
                    continue;
                };
                let positive = o["interpretation"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|i| i["coding"][0]["code"] == "POS");
                acc.screen(Screen {
                    patient: patient.to_string(),
                    date,
                    domain,
                    positive,
                });
            }
        },
    )
    .await?;

    progress.stage("visits");
    each_page(client, "Encounter", &period_q("date"), progress, |page| {
        for e in page.resources("Encounter") {
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
    })
    .await?;

    progress.stage("done");
    Ok(acc.finish(OffsetDateTime::now_utc()))
}
