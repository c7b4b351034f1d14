//! The patterns view against a real FHIR server (hfs enforcing SMART
//! scopes) holding a generated population of 5,000 patients (20,000 Tasks,
//! 5,000 denials): the measures match what the generator made, and the
//! export holds aggregates only.

mod common;

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

    // Denials: one per patient, by payer and by postal area. One in eight
    // was entered by hand (no ClaimResponse: the appeal Task records it,
    // with the payer typed shorter than its name on file); each counts
    // under its coverage's payer, so every patient's denial is here.
    assert_eq!(all.iter().filter(|f| f.hand_entered).count(), 625);
    for (k, (_, name, _, _)) in population::PAYERS.iter().enumerate() {
        let n = all.iter().filter(|f| f.payer == k).count();
        assert_eq!(get("denials-by-payer", name), n.to_string(), "{name}");
    }
    for area in ["627", "606", "618"] {
        let n = all.iter().filter(|f| f.zip.starts_with(area)).count();
        assert_eq!(get("denials-by-postal-area", area), n.to_string(), "{area}");
    }
    // Appeals: rate, overturns among decisions.
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
    let expedited: Vec<_> = decided.iter().filter(|a| a.expedited).collect();
    let late = expedited
        .iter()
        .filter(|a| a.decided_after_hours.unwrap() > 72)
        .count();
    assert_eq!(
        get("late-decisions-expedited", ""),
        pct(late, expedited.len())
    );
    // Referrals by domain: three per patient.
    for d in population::DOMAINS {
        let n = all
            .iter()
            .flat_map(|f| f.referrals.iter())
            .filter(|r| r.domain == d)
            .count();
        assert_eq!(get("referrals-by-domain", d), n.to_string(), "{d}");
    }
    // Screening: the share of visits screened.
    let screened = all.iter().filter(|f| f.screen.is_some()).count();
    assert_eq!(get("visits-screened", ""), pct(screened, PATIENTS));
    // The same item denied by the same payer: every (payer, item) pair.
    let repeated = v.keys().filter(|(m, _)| m == "repeated-denials").count();
    assert_eq!(repeated, population::PAYERS.len() * population::ITEMS.len());

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
