//! The patterns view against a real FHIR server (hfs enforcing SMART
//! scopes) holding a generated population of 5,000 patients (20,000 Tasks,
//! 5,000 denials): the measures match what the generator made, and the
//! export holds aggregates only.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::smart::{Browser, EnvOptions, Page, SmartEnv, approve_standalone_as, smart_env_with};
use passerelle::auth::smart::ClientAuthMethod;
use passerelle::seed::population::{self, facts};

const PATIENTS: usize = 5_000;

async fn env() -> SmartEnv {
    smart_env_with(EnvOptions {
        method: ClientAuthMethod::PrivateKeyJwt,
        queue_poll_seconds: Some(900),
        population: PATIENTS,
        // The practice, payers and team only: the population is all the data.
        fixtures: Some(vec!["00-"]),
        // Read by Bulk Data export (hfs's status and file URLs need the
        // wildcard).
        backend_scope: Some(common::smart::hfs_bulk_scope()),
        ..Default::default()
    })
    .await
}

async fn coordinator(env: &SmartEnv, browser: &Browser) -> String {
    let picker = browser
        .get(&format!(
            "{}/standalone/start?queue=1&iss={}",
            env.app,
            common::enc(env.launcher.fhir_base().as_str())
        ))
        .await;
    let queue = approve_standalone_as(browser, &picker, "pas-prac-lee", "").await;
    assert_eq!(queue.status, 200, "{}", queue.body);
    queue.url.as_str().replace("/queue", "/patterns")
}

/// Compute the measures for the last 365 days and wait for them.
async fn computed(browser: &Browser, url: &str) -> Page {
    let page = browser.get(url).await;
    let today = time::OffsetDateTime::now_utc().date();
    let start = (today - time::Duration::days(365)).to_string();
    let started = browser
        .post_form(
            url,
            &[
                ("csrf", &common::smart::hidden_field(&page.body, "csrf")),
                ("start", &start),
                ("end", &today.to_string()),
            ],
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let page = browser.get(url).await;
        if page.body.contains("id=\"export-csv\"") && !page.body.contains("id=\"progress\"") {
            return page;
        }
        assert!(
            !page.body.contains("The last computation failed"),
            "{}",
            page.body
        );
        assert!(Instant::now() < deadline, "never computed: {}", page.body);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// (measure, category) → value, from the CSV export.
fn values(csv_text: &str) -> HashMap<(String, String), String> {
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            ((rec[1].to_string(), rec[4].to_string()), rec[5].to_string())
        })
        .collect()
}

/// What a table's cells must read when each counts one patient: the count,
/// "< 11" for 1 to 10, and when exactly one cell is small, the smallest
/// other non-zero cell too (complementary suppression; ties by label).
fn expected(counts: &HashMap<String, usize>) -> HashMap<String, String> {
    let small = |n: usize| (1..11).contains(&n);
    let mut out: HashMap<String, String> = counts
        .iter()
        .map(|(k, &n)| {
            (
                k.clone(),
                if small(n) {
                    "< 11".into()
                } else {
                    n.to_string()
                },
            )
        })
        .collect();
    if counts.values().filter(|&&n| small(n)).count() == 1
        && let Some((k, _)) = counts
            .iter()
            .filter(|(_, n)| **n >= 11)
            .min_by_key(|(k, n)| (**n, (*k).clone()))
    {
        out.insert(k.clone(), "< 11".into());
    }
    out
}

fn pct(n: usize, d: usize) -> String {
    format!("{:.1}", 100.0 * n as f64 / d as f64)
}

#[tokio::test]
async fn measures_over_five_thousand_patients_match_the_generator_and_the_export_is_aggregates_only()
 {
    let started = Instant::now();
    let env = env().await;
    println!("seeded {PATIENTS} patients in {:?}", started.elapsed());
    let browser = Browser::default();
    let url = coordinator(&env, &browser).await;
    let started = Instant::now();
    let page = computed(&browser, &url).await;
    println!("measures computed in {:?}", started.elapsed());
    // Read by Bulk Data export, and the page says so.
    assert!(
        page.body
            .contains("<p class=\"muted\" id=\"read-path\">Read by FHIR Bulk Data export.</p>"),
        "{}",
        page.body
    );
    // A chart and its table for each breakdown.
    assert!(page.body.contains("<svg role=\"img\""));
    assert!(page.body.contains("class=\"chart-table\""));

    let csv_page = browser.get(&format!("{url}/export.csv")).await;
    assert_eq!(csv_page.status, 200);
    assert_eq!(csv_page.headers["content-type"], "text/csv; charset=utf-8");
    let v = values(&csv_page.body);
    let get = |m: &str, c: &str| {
        v.get(&(m.to_string(), c.to_string()))
            .cloned()
            .unwrap_or_else(|| panic!("no {m} / {c} in the export"))
    };
    let all: Vec<_> = (0..PATIENTS).map(facts).collect();

    let today = time::OffsetDateTime::now_utc().date();
    let day = |offset: i64| today + time::Duration::days(offset);
    // Every table and trend of the export, cell by cell, against what the
    // generator made (with the suppression rule applied to those counts).
    let check = |measure: &str, counts: Vec<(String, usize)>| {
        let mut by: HashMap<String, usize> = HashMap::new();
        for (label, n) in counts {
            *by.entry(label).or_default() += n;
        }
        for (label, want) in expected(&by) {
            assert_eq!(get(measure, &label), want, "{measure} / {label}");
        }
    };
    let per_patient = |label: &dyn Fn(&population::Facts) -> String| {
        all.iter().map(|f| (label(f), 1)).collect::<Vec<_>>()
    };

    // Denials: one per patient. One in eight was entered by hand (no
    // ClaimResponse: the appeal Task records it, with the payer typed
    // shorter than its name on file); each counts under its coverage's
    // payer, so every patient's denial is here.
    assert_eq!(all.iter().filter(|f| f.hand_entered).count(), 625);
    check(
        "denials-by-payer",
        per_patient(&|f| population::PAYERS[f.payer].1.to_string()),
    );
    check(
        "denials-by-plan-type",
        per_patient(&|f| population::PAYERS[f.payer].3.to_string()),
    );
    check(
        "denials-by-item",
        per_patient(&|f| {
            let (_, code, display) = population::ITEMS[f.item];
            format!("{code} {display}")
        }),
    );
    check(
        "denials-by-reason",
        per_patient(&|f| population::REASONS[f.reason].to_string()),
    );
    // Breakdowns: a rare language and a Safe Harbor ZIP area make small
    // cells, each with its complementary suppression.
    let area = |f: &population::Facts| {
        if f.zip == population::RARE_ZIP {
            "000".to_string()
        } else {
            f.zip[..3].to_string()
        }
    };
    check("denials-by-postal-area", per_patient(&area));
    assert_eq!(get("denials-by-postal-area", "000"), "< 11");
    assert!(
        !v.keys().any(|(_, c)| c == "036"),
        "a restricted area shown"
    );
    check("denials-by-language", per_patient(&|f| f.lang.to_string()));
    assert_eq!(get("denials-by-language", population::RARE_LANG), "< 11");
    check("denials-by-sex", per_patient(&|f| f.sex.to_string()));
    let band = |age: i64| match age {
        ..=17 => "0-17",
        18..=39 => "18-39",
        40..=64 => "40-64",
        _ => "65+",
    };
    check(
        "denials-by-age-band",
        per_patient(&|f| band(f.age).to_string()),
    );

    // Appeals: rate, overturns among decisions, decisions later than the clocks.
    let appealed = all.iter().filter(|f| f.appeal.is_some()).count();
    assert_eq!(get("appeal-rate", ""), pct(appealed, PATIENTS));
    let decided: Vec<_> = all
        .iter()
        .filter_map(|f| f.appeal.as_ref())
        .filter(|a| a.outcome.is_some())
        .collect();
    let overturned = decided
        .iter()
        .filter(|a| a.outcome == Some("overturned"))
        .count();
    assert_eq!(get("overturn-rate", ""), pct(overturned, decided.len()));
    let late = |expedited: bool| {
        let clock = if expedited { 72 } else { 7 * 24 };
        let of: Vec<_> = decided
            .iter()
            .filter(|a| a.expedited == expedited)
            .collect();
        let late = of
            .iter()
            .filter(|a| a.decided_after_hours.unwrap() > clock)
            .count();
        (late, of.len())
    };
    let (late_e, expedited) = late(true);
    let (late_s, standard) = late(false);
    assert_eq!(get("late-decisions-expedited", ""), pct(late_e, expedited));
    assert_eq!(get("late-decisions-standard", ""), pct(late_s, standard));
    assert_eq!(
        get("late-decisions", ""),
        pct(late_e + late_s, expedited + standard)
    );
    // The same item denied by the same payer: every (payer, item) pair, 250
    // patients each, given as a band.
    for (_, payer, _, _) in population::PAYERS {
        for (_, code, display) in population::ITEMS {
            assert_eq!(
                get("repeated-denials", &format!("{payer} | {code} {display}")),
                "100 or more"
            );
        }
    }
    let repeated = v.keys().filter(|(m, _)| m == "repeated-denials").count();
    assert_eq!(repeated, population::PAYERS.len() * population::ITEMS.len());

    // Referrals: three per patient, by domain; those rejected, cancelled or
    // still unanswered after 30 days.
    let referrals = || all.iter().flat_map(|f| f.referrals.iter());
    check(
        "referrals-by-domain",
        referrals().map(|r| (r.domain.to_string(), 1)).collect(),
    );
    // By the payer of the coverage active on the period's last day (none
    // for those whose coverage lapsed).
    check(
        "referrals-by-payer",
        all.iter()
            .map(|f| {
                let payer = match f.coverage_end {
                    Some(_) => "unknown".to_string(),
                    None => population::PAYERS[f.payer].1.to_string(),
                };
                (payer, 3)
            })
            .collect(),
    );
    check(
        "referrals-unanswered-by-domain",
        referrals()
            .filter(|r| {
                matches!(r.status, "rejected" | "cancelled")
                    || (r.status == "requested" && r.authored < -30)
            })
            .map(|r| (r.domain.to_string(), 1))
            .collect(),
    );
    // Closed within 60 days of the positive screen in their domain: the
    // first referral shares the screened domain, on the visit's day.
    let positive: Vec<_> = all
        .iter()
        .filter(|f| f.screen.is_some_and(|(_, p)| p))
        .collect();
    let in_time = positive
        .iter()
        .filter(|f| {
            let r = &f.referrals[0];
            r.closed.is_some_and(|c| (0..=60).contains(&(c - f.visit)))
        })
        .count();
    assert_eq!(
        get("referrals-closed-within-60-days", ""),
        pct(in_time, positive.len())
    );

    // Screening: visits screened, positivity by domain, unmet needs (every
    // positive screen here has a referral in its domain).
    let screened = all.iter().filter(|f| f.screen.is_some()).count();
    assert_eq!(get("visits-screened", ""), pct(screened, PATIENTS));
    check(
        "positive-screens-by-domain",
        positive
            .iter()
            .map(|f| (f.screen.unwrap().0.to_string(), 1))
            .collect(),
    );
    for d in population::DOMAINS {
        let of: Vec<_> = all
            .iter()
            .filter_map(|f| f.screen)
            .filter(|(domain, _)| *domain == d)
            .collect();
        let pos = of.iter().filter(|(_, p)| *p).count();
        assert_eq!(
            get(&format!("positivity-{d}"), ""),
            pct(pos, of.len()),
            "{d}"
        );
    }
    assert_eq!(get("unmet-needs", ""), "0.0");

    // Coverage: lapses in the month a coverage ended with no other, and
    // patients without coverage at each month's end.
    let ended: Vec<time::Date> = all.iter().filter_map(|f| f.coverage_end).map(day).collect();
    assert!(ended.len() > 400, "{} lapses", ended.len());
    let month = |d: time::Date| format!("{:04}-{:02}", d.year(), d.month() as u8);
    check(
        "coverage-lapses-by-month",
        ended.iter().map(|d| (month(*d), 1)).collect(),
    );
    let start = today - time::Duration::days(365);
    let mut gaps = Vec::new();
    let mut first = start.replace_day(1).unwrap();
    while first <= today {
        let next = first
            .checked_add(time::Duration::days(32))
            .unwrap()
            .replace_day(1)
            .unwrap();
        let last = next.previous_day().unwrap().min(today);
        gaps.push((month(first), ended.iter().filter(|e| **e < last).count()));
        first = next;
    }
    check("coverage-gaps-by-month", gaps);

    // The export: aggregates only, no identifier, name, birth date or free text.
    let report = browser.get(&format!("{url}/measure-report.json")).await;
    assert_eq!(report.status, 200, "{}", report.body);
    let mr: serde_json::Value = serde_json::from_str(&report.body).unwrap();
    assert_eq!(mr["resourceType"], "MeasureReport");
    assert_eq!(mr["type"], "summary");
    for text in [&csv_page.body, &report.body] {
        for forbidden in [
            "pas-pop-",
            "POP-",
            "Population",
            "Denied.",
            "Denied: not medically necessary.",
            "Patient/",
            "birthDate",
        ] {
            assert!(!text.contains(forbidden), "{forbidden} in an export");
        }
        // Birth dates are days from the anchor minus whole years: none of
        // the generated ones appears.
        let shift = passerelle::seed::shift_for(time::OffsetDateTime::now_utc().date());
        for f in all.iter().take(200) {
            let birth = (passerelle::seed::ANCHOR + time::Duration::days(shift)
                - time::Duration::days(365 * f.age + 30))
            .to_string();
            assert!(!text.contains(&birth), "a birth date in an export");
        }
        assert!(
            text.contains("1 to 10 distinct patients"),
            "the suppression rule is stated"
        );
    }
}

// ---- The two read paths: FHIR Bulk Data export and paged searches ----

use common::proxy::{Fault, Proxy};
use common::smart::{assert_same_measures, hfs_bulk_scope, quick_bulk, system_client};
use passerelle::auth::smart::BackendConfig;
use passerelle::domain::patterns::{Period, ReadMode, ReadPath, Report};
use passerelle::fhir::FhirClient;
use passerelle::fhir::bulk::GroupId;
use passerelle::fhir::patterns::{Progress, compute_with};

/// More than one batch of 500 patients, small enough to seed quickly.
const SMALL: usize = 600;

async fn small_env(bulk_export_disabled: bool, population: usize) -> SmartEnv {
    smart_env_with(EnvOptions {
        population,
        fixtures: Some(vec!["00-"]),
        bulk_export_disabled,
        ..Default::default()
    })
    .await
}

fn last_year() -> Period {
    let today = time::OffsetDateTime::now_utc().date();
    Period {
        start: today - time::Duration::days(365),
        end: today,
    }
}

async fn measures(client: &FhirClient, mode: ReadMode) -> Result<Report, String> {
    let started = Instant::now();
    let r = compute_with(client, last_year(), &Progress::default(), mode)
        .await
        .map_err(|e| e.to_string());
    println!(
        "{mode:?}: {:?} in {:?}",
        r.as_ref().map(|r| &r.read),
        started.elapsed()
    );
    r
}

/// The default Backend Services scopes without `system/{kind}.rs`.
fn scopes_without(kind: &str) -> String {
    let without = format!("system/{kind}.rs");
    BackendConfig::DEFAULT_SCOPE
        .split(' ')
        .filter(|s| *s != without)
        .collect::<Vec<_>>()
        .join(" ")
}

fn fallen_back(report: &Report) -> String {
    match &report.read {
        ReadPath::SearchAfter { why } => why.clone(),
        other => panic!("not a fall-back to the searches: {other:?}"),
    }
}

#[tokio::test]
async fn a_bulk_export_gives_the_measures_of_the_searches_cell_by_cell_under_the_backend_scopes() {
    let env = small_env(false, SMALL).await;
    let proxy = Proxy::start(env.server.base()).await;
    env.launcher.set_upstream(proxy.base.clone());
    // Passerelle's own Backend Services scopes, enforced by hfs.
    let searching = system_client(&env, BackendConfig::DEFAULT_SCOPE, quick_bulk());
    let search = measures(&searching, ReadMode::Search).await.unwrap();
    assert_eq!(search.read, ReadPath::Search);
    assert_eq!(search.counted.patients, SMALL as u64);
    let client = system_client(&env, &hfs_bulk_scope(), quick_bulk());
    let before = proxy.seen().len();
    let bulk = measures(&client, ReadMode::Bulk).await.unwrap();
    assert_eq!(bulk.read, ReadPath::Bulk { unreadable: vec![] });
    assert_eq!(bulk.read.words(), "Read by FHIR Bulk Data export.");
    assert_same_measures(&search, &bulk);
    // One kick-off for every type the measures read, files read with the
    // token, the export deleted once read; no search sent.
    let seen = proxy.seen().split_off(before);
    let kickoffs: Vec<_> = seen.iter().filter(|r| r.contains("$export")).collect();
    assert_eq!(kickoffs.len(), 1, "{kickoffs:?}");
    assert!(
        kickoffs[0]
            .starts_with("GET /Patient/$export?_type=Patient%2CCoverage%2CClaim%2CClaimResponse"),
        "{}",
        kickoffs[0]
    );
    assert!(
        seen.iter().any(|r| r.starts_with("GET /export-file/")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|r| r.starts_with("DELETE /export-status/")),
        "{seen:?}"
    );
    // Only the Tasks (outside the Patient compartment) and the payers are
    // searched.
    assert!(
        !seen.iter().any(|r| r.starts_with("GET /Encounter?")),
        "a search sent"
    );
    assert!(
        !seen.iter().any(|r| r.starts_with("GET /Observation?")),
        "a search sent"
    );
    assert!(
        seen.iter().any(|r| r.starts_with("GET /Organization?_id=")),
        "{seen:?}"
    );
    // Auto takes the export when the server offers it.
    assert!(
        measures(&client, ReadMode::Auto)
            .await
            .unwrap()
            .read
            .is_bulk()
    );

    // The per-type scopes alone: hfs starts the export but refuses its
    // status (403); Auto reads it all by searches and says why.
    let err = measures(&searching, ReadMode::Bulk).await.unwrap_err();
    assert!(err.contains("the status") && err.contains("403"), "{err}");
    let r = measures(&searching, ReadMode::Auto).await.unwrap();
    assert!(fallen_back(&r).contains("403"));
    assert_same_measures(&search, &r);

    // The practice's Group: `Group/[id]/$export` needs `system/Group.rs`,
    // which the default scopes hold.
    let admin = system_client(&env, "system/*.cruds", quick_bulk());
    let mut members = Vec::new();
    let mut page = admin
        .search(
            "Patient",
            &[("_elements", "id".into()), ("_count", "1000".into())],
        )
        .await
        .unwrap();
    loop {
        members.extend(page.raw("Patient").map(|p| {
            serde_json::json!({
                "entity": { "reference": format!("Patient/{}", p["id"].as_str().unwrap()) }
            })
        }));
        match admin.next_page(&page, "Patient").await.unwrap() {
            Some(next) => page = next,
            None => break,
        }
    }
    assert_eq!(members.len(), SMALL);
    let group = admin
        .create(
            &serde_json::json!({ "resourceType": "Group", "type": "person", "actual": true,
                "name": "The practice's patients", "member": members }),
            None,
        )
        .await
        .unwrap();
    let group = GroupId::parse(
        group
            .reference
            .as_deref()
            .and_then(|r| r.strip_prefix("Group/"))
            .unwrap(),
    )
    .unwrap();
    let of_group = passerelle::fhir::bulk::BulkSettings {
        group: Some(group),
        ..quick_bulk()
    };
    let by_group = system_client(&env, &hfs_bulk_scope(), of_group);
    let grouped = measures(&by_group, ReadMode::Bulk).await.unwrap();
    assert!(grouped.read.is_bulk());
    assert!(
        proxy
            .seen()
            .iter()
            .any(|r| r.starts_with(&format!("GET /Group/{}/$export", group.as_str())))
    );
    assert_same_measures(&search, &grouped);
    // Without `system/Group.rs` (and no wildcard), hfs refuses the kick-off.
    let no_group_scope = system_client(&env, &scopes_without("Group"), of_group);
    let why = fallen_back(&measures(&no_group_scope, ReadMode::Auto).await.unwrap());
    assert!(why.contains("the kick-off") && why.contains("403"), "{why}");
}

#[tokio::test]
async fn an_export_not_offered_failed_or_too_slow_falls_back_to_the_searches_and_a_bad_line_is_counted()
 {
    let env = small_env(false, SMALL).await;
    let proxy = Proxy::start(env.server.base()).await;
    env.launcher.set_upstream(proxy.base.clone());
    let client = system_client(&env, &hfs_bulk_scope(), quick_bulk());
    let search = measures(&client, ReadMode::Search).await.unwrap();

    // Not offered: the kick-off answers 404 (a server without the route).
    let outcome = |text: &str| {
        format!(
            r#"{{"resourceType":"OperationOutcome","issue":[{{"severity":"error","code":"exception","diagnostics":"{text}"}}]}}"#
        )
    };
    proxy.fault(
        "/Patient/$export",
        Fault::Status(404, outcome("no such operation")),
    );
    let r = measures(&client, ReadMode::Auto).await.unwrap();
    assert_eq!(
        fallen_back(&r),
        "the EHR does not offer Bulk Data export (Patient/$export answered 404)"
    );
    assert!(
        r.read
            .words()
            .starts_with("Read by paged FHIR searches: the EHR does not offer")
    );
    assert_same_measures(&search, &r);
    let err = measures(&client, ReadMode::Bulk).await.unwrap_err();
    assert!(err.contains("answered 404"), "{err}");
    proxy.clear();

    // The export fails on the server: its status answers 500 with an
    // OperationOutcome; the reason is given, the export deleted.
    proxy.fault(
        "/export-status/",
        Fault::Status(500, outcome("the export job failed")),
    );
    let before = proxy.seen().len();
    let r = measures(&client, ReadMode::Auto).await.unwrap();
    let why = fallen_back(&r);
    assert!(
        why.contains("the status") && why.contains("the export job failed"),
        "{why}"
    );
    assert_same_measures(&search, &r);
    assert!(
        proxy.seen()[before..]
            .iter()
            .any(|x| x.starts_with("DELETE /export-status/"))
    );
    proxy.clear();

    // Never complete: past the bound on the wait, a clear error; the
    // export is cancelled.
    proxy.fault("/export-status/", Fault::Status(202, String::new()));
    let slow = passerelle::fhir::bulk::BulkSettings {
        max_wait: Duration::from_secs(3),
        ..quick_bulk()
    };
    let impatient = system_client(&env, &hfs_bulk_scope(), slow);
    let err = measures(&impatient, ReadMode::Bulk).await.unwrap_err();
    assert!(err.contains("not complete after 3 s"), "{err}");
    let r = measures(&impatient, ReadMode::Auto).await.unwrap();
    assert!(fallen_back(&r).contains("not complete after 3 s"));
    assert_same_measures(&search, &r);
    proxy.clear();

    // A line of an output file that is not a resource: counted and named,
    // every other line counted.
    proxy.fault(
        "/Encounter-0",
        Fault::Append("{\"resourceType\": \"Encounter\", \n"),
    );
    let r = measures(&client, ReadMode::Bulk).await.unwrap();
    assert_eq!(
        r.read,
        ReadPath::Bulk {
            unreadable: vec![("Encounter".into(), 1)]
        }
    );
    assert!(
        r.read
            .words()
            .contains("1 line of the export could not be read")
    );
    assert_same_measures(&search, &r);
}

#[tokio::test]
async fn a_server_with_bulk_export_switched_off_is_read_by_searches_with_the_same_result() {
    let env = small_env(true, SMALL).await;
    let client = system_client(&env, &hfs_bulk_scope(), quick_bulk());
    let search = measures(&client, ReadMode::Search).await.unwrap();
    let auto = measures(&client, ReadMode::Auto).await.unwrap();
    let why = fallen_back(&auto);
    assert!(
        why.contains("answered 501") || why.contains("CapabilityStatement declares no"),
        "{why}"
    );
    assert_same_measures(&search, &auto);
}
