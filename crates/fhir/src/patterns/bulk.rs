//! The population by FHIR Bulk Data export (Bulk Data Access IG 2.0.0):
//! one `Patient/$export` (or `Group/[id]/$export`) of the types the
//! measures read, its NDJSON files read line by line as they stream in, and
//! the same batch-wise counting as the search path.
//!
//! An export's files are by resource type, not by patient, while every
//! measure joins one patient's records (an appeal to its denial, a referral
//! to the screen before it). So each line is first decoded just enough to
//! know its type, id and patient ([`Head`]), and appended to the spool of
//! its patient's batch ([`BATCH`] patients, in the order of the Patient
//! files); once every file is read, each batch is read back and counted
//! exactly as a batch of the search path is ([`count_batch`]), with the
//! same filters the searches apply on the server (period, Task codes, the
//! SDOH categories and codes). Memory holds one batch's text at a time and
//! an index of patients (about 40 bytes each), never a whole file. The
//! spool files are unlinked as soon as they are created: they hold patient
//! data, and nothing of them remains on disk once the computation ends,
//! even if the process dies.
//!
//! A line that is not JSON, or not a resource of its file's type with an
//! id, is counted by type ([`crate::domain::patterns::ReadPath::Bulk`]) and
//! left out; every other line is counted. An export that cannot be used
//! (refused, failed, too slow, errors reported by the server) gives a
//! [`BulkOutcome`] for the caller to decide on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::sync::atomic::Ordering;

use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::bulk::{Kickoff, offers_export};
use crate::domain::patterns::BulkOutcome;

/// The resource types of the Patient compartment the measures read: the
/// patients, their coverages, claims and their responses, the referrals'
/// ServiceRequests, screenings (Observations, QuestionnaireResponses),
/// health concerns, visits. The payers (Organization) and the appeal and
/// referral Tasks are not in the R4 Patient compartment
/// (compartmentdefinition-patient), which Patient- and Group-level exports
/// follow (Bulk Data IG `_type`): they are read by search.
pub const TYPES: [&str; 9] = [
    "Patient",
    "Coverage",
    "Claim",
    "ClaimResponse",
    "ServiceRequest",
    "Observation",
    "QuestionnaireResponse",
    "Condition",
    "Encounter",
];

/// Patients per batch, as a page of the search path.
const BATCH: usize = PAGE_SIZE;

/// The counts before suppression, the item names, and the unreadable lines
/// by type; or why the export could not be used.
pub(super) type Read = (Raw, HashMap<String, String>, Vec<(String, usize)>);

pub(super) async fn read(
    client: &FhirClient,
    period: Period,
    progress: &Progress,
) -> Result<Read, BulkOutcome> {
    let group = client.limits.bulk.group;
    progress.stage("bulk export: the server's capabilities");
    // A server that says it has no export is believed; one whose statement
    // cannot be read is tried (a 404, 405 or 501 then says it).
    if let Ok(c) = client.capabilities().await
        && offers_export(&c, group.is_some()) == Some(false)
    {
        let why = format!(
            "its CapabilityStatement declares no {} export",
            if group.is_some() { "Group" } else { "Patient" }
        );
        tracing::info!(why, "patterns: read by searches");
        return Err(BulkOutcome::NotOffered(why));
    }
    progress.stage("bulk export: kick-off");
    let status = match client.export_kickoff(group, &TYPES).await {
        Ok(Kickoff::Started(url)) => url,
        Ok(Kickoff::NotOffered(why)) => {
            tracing::info!(why, "patterns: read by searches");
            return Err(BulkOutcome::NotOffered(why));
        }
        Err(e) => return Err(failed("the kick-off", &e)),
    };
    let result = read_export(client, &status, period, progress).await;
    // Bulk Data IG "Bulk Data Delete Request": the files are no longer
    // needed, read or not (a running export is cancelled).
    client.export_delete(&status).await;
    result
}

/// Why the export failed, logged by its stage and kind (the server's
/// words, which may quote data, go to the page only).
fn failed(stage: &str, e: &FhirError) -> BulkOutcome {
    tracing::warn!(
        stage,
        kind = e.kind(),
        "patterns: the Bulk Data export failed"
    );
    BulkOutcome::Failed(format!("{stage}: {e}"))
}

async fn read_export(
    client: &FhirClient,
    status: &url::Url,
    period: Period,
    progress: &Progress,
) -> Result<Read, BulkOutcome> {
    let settings = &client.limits.bulk;
    progress.stage("bulk export: waiting for the server");
    let manifest = client
        .export_wait(status, settings.max_wait, settings.max_poll_interval, |p| {
            progress.stage(&format!("bulk export: the server is at {p}"))
        })
        .await
        .map_err(|e| failed("the status", &e))?;
    if !manifest.error.is_empty() {
        let why = format!(
            "the server could not export some resources ({} error file{})",
            manifest.error.len(),
            if manifest.error.len() == 1 { "" } else { "s" }
        );
        tracing::warn!(why, "patterns: the Bulk Data export failed");
        return Err(BulkOutcome::Failed(why));
    }
    let spool_failed = |e: std::io::Error| {
        tracing::warn!(kind = ?e.kind(), "patterns: the Bulk Data spool failed");
        BulkOutcome::Failed(format!("the spool on local disk failed: {e}"))
    };
    let mut spool = Spool::default();
    // Patient id hash → batch; Organization id → name (for the payers).
    let mut batch_of: HashMap<u128, u32> = HashMap::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut unreadable: BTreeMap<String, usize> = BTreeMap::new();
    // The payers the records name (a few hundred distinct ids at most).
    let mut payers: HashSet<String> = HashSet::new();
    // The Patient files first: a record is spooled with its patient's batch.
    let (patients, others): (Vec<_>, Vec<_>) = manifest
        .output
        .iter()
        .partition(|f| f.resource_type == "Patient");
    for file in patients.into_iter().chain(others) {
        progress.stage(&format!("bulk export: {} file", file.resource_type));
        let mut io_error = None;
        let kind = file.resource_type.as_str();
        client
            .export_lines(file, manifest.requires_access_token, |line| {
                progress.resources.fetch_add(1, Ordering::Relaxed);
                let Some(head) = Head::of(line, kind) else {
                    *unreadable.entry(kind.to_string()).or_default() += 1;
                    return;
                };
                let batch = match kind {
                    "Patient" => {
                        let next = (batch_of.len() / BATCH) as u32;
                        match batch_of.entry(id_key(&head.id)) {
                            // The same patient twice is counted once.
                            std::collections::hash_map::Entry::Occupied(_) => return,
                            std::collections::hash_map::Entry::Vacant(v) => *v.insert(next),
                        }
                    }
                    // Records of a patient the export does not hold are
                    // not counted (as on the search path).
                    _ => match head.patient(kind).and_then(|p| batch_of.get(&id_key(p))) {
                        Some(b) => {
                            payers.extend(head.payers().map(String::from));
                            *b
                        }
                        None => return,
                    },
                };
                if io_error.is_none()
                    && let Err(e) = spool.write(batch, kind, line)
                {
                    io_error = Some(e);
                }
            })
            .await
            .map_err(|e| failed(&format!("the {kind} file"), &e))?;
        if let Some(e) = io_error {
            return Err(spool_failed(e));
        }
        progress.pages.fetch_add(1, Ordering::Relaxed);
    }
    // The payers, outside the Patient compartment, read by id as the
    // searches' `_include` reads them.
    let missing: Vec<String> = payers
        .into_iter()
        .filter(|id| crate::client::is_valid_id(id))
        .collect();
    for ids in missing.chunks(IDS_PER_SEARCH) {
        progress.stage("bulk export: the payers");
        each_page(
            client,
            "Organization",
            &[("_id", ids.join(","))],
            progress,
            |page| names.extend(organization_names(page)),
        )
        .await
        .map_err(|e| failed("the payers' Organizations", &e))?;
    }
    progress.stage("bulk export: counting");
    let rules = Rules::shared();
    let screening = sdoh::PopulationFilter::new(rules);
    let mut total = Raw::default();
    let mut item_names: HashMap<String, String> = HashMap::new();
    let mut seen: HashSet<u128> = HashSet::new();
    for batch in spool.batches() {
        let lines = batch.map_err(spool_failed)?;
        let cx = Counting {
            client,
            period,
            names: &names,
            screening: &screening,
            progress,
        };
        let acc = count_batch(&cx, &lines, &mut item_names, &mut seen)
            .await
            .map_err(|e| failed("the Tasks", &e))?;
        total.merge(acc.finish_raw());
    }
    Ok((total, item_names, unreadable.into_iter().collect()))
}

/// Whether a date search `ge{start}&le{end}` matches `value` (a date or
/// dateTime): its day within the period.
fn on_a_day_of(value: &Value, period: Period) -> bool {
    views::json_date(value).is_some_and(|d| d >= period.start && d <= period.end)
}

/// Whether `Encounter?date=ge{start}&date=le{end}` matches `encounter`:
/// its period (an open end running on) meets the days of `period` (FHIR R4
/// search.html#date: the ranges intersect).
fn meets(encounter: &Value, period: Period) -> bool {
    let p = &encounter["period"];
    let (start, end) = (views::json_date(&p["start"]), views::json_date(&p["end"]));
    if start.is_none() && end.is_none() {
        return false;
    }
    start.is_none_or(|s| s <= period.end) && end.is_none_or(|e| e >= period.start)
}

/// What every batch is counted with.
#[derive(Clone, Copy)]
struct Counting<'a> {
    client: &'a FhirClient,
    period: Period,
    /// Organization id → name, for the payers.
    names: &'a HashMap<String, String>,
    screening: &'a sdoh::PopulationFilter,
    progress: &'a Progress,
}

/// One batch's spooled lines counted as the search path counts a batch:
/// the same records (filtered as the searches filter them on the server)
/// to the same counting functions, in the same order; the batch's Tasks
/// by the search path's own searches.
async fn count_batch(
    cx: &Counting<'_>,
    lines: &[String],
    item_names: &mut HashMap<String, String>,
    seen: &mut HashSet<u128>,
) -> Result<Accumulator, FhirError> {
    let Counting {
        client,
        period,
        names,
        screening,
        progress,
    } = *cx;
    let of = |kind: &'static str| {
        lines.iter().filter_map(move |l| {
            let (t, json) = l.split_once('\t')?;
            (t == kind)
                .then(|| serde_json::from_str::<Value>(json).ok())
                .flatten()
        })
    };
    let mut acc = Accumulator::new(period);
    let ids: Vec<String> = of("Patient")
        .filter_map(|p| count_patient(&p, seen, &mut acc))
        .collect();
    let mut plans: HashMap<String, Plan> = HashMap::new();
    count_coverages(of("Coverage"), names, &mut plans, &mut acc);

    let responses: Vec<Value> = of("ClaimResponse")
        .filter(|cr| on_a_day_of(&cr["created"], period))
        .collect();
    // The Claims `_include=ClaimResponse:request` brings: those the
    // period's responses name.
    let requested: HashSet<String> = responses
        .iter()
        .filter_map(|cr| id_of(&cr["request"], "Claim").map(String::from))
        .collect();
    let claims = claims(
        of("Claim").filter(|c| c["id"].as_str().is_some_and(|id| requested.contains(id))),
        item_names,
    );
    count_denials(responses.into_iter(), &claims, names, &plans, &mut acc);

    for chunk in ids.chunks(IDS_PER_SEARCH) {
        let who = chunk
            .iter()
            .map(|id| format!("Patient/{id}"))
            .collect::<Vec<_>>()
            .join(",");
        read_tasks(client, &who, &plans, &mut acc, progress).await?;
    }
    drop(plans);

    let rules = Rules::shared();
    let observations: Vec<Value> = of("Observation").filter(|o| screening.matches(o)).collect();
    let responses: Vec<Value> = of("QuestionnaireResponse").collect();
    let conditions: Vec<Value> = of("Condition").filter(|c| screening.matches(c)).collect();
    count_screens(rules, &observations, &responses, &conditions, &mut acc);

    count_visits(of("Encounter").filter(|e| meets(e, period)), &mut acc);
    Ok(acc)
}

/// What a line is decoded into first: its type, id, and the references
/// that say whose it is (the element each type's `patient` search
/// parameter reads, FHIR R4 compartmentdefinition-patient).
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "resourceType")]
    resource_type: String,
    id: String,
    subject: Option<Reference>,
    patient: Option<Reference>,
    beneficiary: Option<Reference>,
    /// A Coverage's payers and a ClaimResponse's insurer: the
    /// Organizations whose names the measures show.
    payor: Option<Vec<Reference>>,
    insurer: Option<Reference>,
}

#[derive(Deserialize)]
struct Reference {
    reference: Option<String>,
}

impl Head {
    /// The line decoded, if it is a resource of type `kind` with a valid id.
    fn of(line: &str, kind: &str) -> Option<Head> {
        let head: Head = serde_json::from_str(line).ok()?;
        (head.resource_type == kind && crate::client::is_valid_id(&head.id)).then_some(head)
    }

    /// The Organizations this record names as payer.
    fn payers(&self) -> impl Iterator<Item = &str> {
        self.payor
            .iter()
            .flatten()
            .chain(&self.insurer)
            .filter_map(|r| r.reference.as_deref()?.strip_prefix("Organization/"))
    }

    /// The patient's id, from the element the search path asks by.
    fn patient(&self, kind: &str) -> Option<&str> {
        let r = match kind {
            "Coverage" => &self.beneficiary,
            "Claim" | "ClaimResponse" => &self.patient,
            _ => &self.subject,
        };
        r.as_ref()?.reference.as_deref()?.strip_prefix("Patient/")
    }
}

/// Lines put aside by batch, in anonymous temporary files (unlinked at
/// creation): `type<TAB>json` per line, as NDJSON has no raw tab or newline
/// inside a resource.
#[derive(Default)]
struct Spool {
    files: Vec<BufWriter<File>>,
}

impl Spool {
    fn write(&mut self, batch: u32, kind: &str, line: &str) -> std::io::Result<()> {
        while self.files.len() <= batch as usize {
            self.files.push(BufWriter::new(anonymous_file()?));
        }
        let w = &mut self.files[batch as usize];
        w.write_all(kind.as_bytes())?;
        w.write_all(b"\t")?;
        w.write_all(line.trim_end().as_bytes())?;
        w.write_all(b"\n")
    }

    /// Each batch's lines, read back one batch at a time.
    fn batches(self) -> impl Iterator<Item = std::io::Result<Vec<String>>> {
        self.files.into_iter().map(|w| {
            let mut file = w.into_inner().map_err(|e| e.into_error())?;
            file.rewind()?;
            BufReader::new(file).lines().collect()
        })
    }
}

/// A read-write file in the temporary directory, readable by this user
/// only, and unlinked at once: the kernel frees it when it is closed.
fn anonymous_file() -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "passerelle-bulk-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::date;

    const YEAR: Period = Period {
        start: date!(2026 - 01 - 01),
        end: date!(2026 - 12 - 31),
    };

    #[test]
    fn a_line_is_read_for_its_type_id_and_patient_or_counted_unreadable() {
        let visit = r#"{"resourceType":"Encounter","id":"e1","subject":{"reference":"Patient/p1"},"status":"finished"}"#;
        let head = Head::of(visit, "Encounter").unwrap();
        assert_eq!(head.patient("Encounter"), Some("p1"));
        assert!(
            Head::of(visit, "Observation").is_none(),
            "another file's type"
        );
        assert!(Head::of(r#"{"resourceType":"Encounter","id":"a b"}"#, "Encounter").is_none());
        assert!(Head::of(r#"{"resourceType":"Encounter","#, "Encounter").is_none());
        let cov =
            r#"{"resourceType":"Coverage","id":"c","beneficiary":{"reference":"Patient/p2"}}"#;
        assert_eq!(
            Head::of(cov, "Coverage").unwrap().patient("Coverage"),
            Some("p2")
        );
        let cr = r#"{"resourceType":"ClaimResponse","id":"r","patient":{"reference":"Patient/p3"},"insurer":{"reference":"Organization/o1"}}"#;
        let head = Head::of(cr, "ClaimResponse").unwrap();
        assert_eq!(head.patient("ClaimResponse"), Some("p3"));
        assert_eq!(head.payers().collect::<Vec<_>>(), ["o1"]);
        let patient = r#"{"resourceType":"Patient","id":"p","name":[{"family":"Roe"}]}"#;
        assert!(Head::of(patient, "Patient").is_some());
    }

    #[test]
    fn the_server_side_filters_are_applied_as_the_searches_apply_them() {
        assert!(on_a_day_of(&json!("2026-12-31T23:00:00Z"), YEAR));
        assert!(!on_a_day_of(&json!("2025-12-31"), YEAR));
        let enc = |start: &str, end: Option<&str>| {
            let mut e = json!({ "period": { "start": start } });
            if let Some(end) = end {
                e["period"]["end"] = json!(end);
            }
            e
        };
        assert!(meets(&enc("2026-03-01", None), YEAR));
        assert!(meets(&enc("2025-12-30", Some("2026-01-02")), YEAR));
        assert!(!meets(&enc("2025-12-01", Some("2025-12-02")), YEAR));
        assert!(!meets(&enc("2027-01-01", None), YEAR));
        assert!(!meets(&json!({}), YEAR));
    }

    #[test]
    fn the_spool_gives_each_batch_back_and_leaves_no_file() {
        let mut spool = Spool::default();
        spool.write(1, "Task", "{\"id\":\"b\"}\n").unwrap();
        spool.write(0, "Patient", "{\"id\":\"a\"}").unwrap();
        let before: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("passerelle-bulk-{}-", std::process::id()))
            })
            .collect();
        assert!(before.is_empty(), "a spool file left on disk");
        let batches: Vec<Vec<String>> = spool.batches().map(Result::unwrap).collect();
        assert_eq!(
            batches,
            vec![
                vec!["Patient\t{\"id\":\"a\"}".to_string()],
                vec!["Task\t{\"id\":\"b\"}".to_string()]
            ]
        );
    }
}
