//! The same scenarios against two independently written FHIR R4 engines:
//! the Helios FHIR Server (hfs 0.2.7, Rust) and Medplum's FHIR engine
//! (`@medplum/fhir-router` 5.2.13 `FhirRouter` over its `MemoryRepository`,
//! TypeScript, behind the thin wrapper `tests/engines/medplum/server.mjs`).
//! A second engine catches what one engine's leniency would hide.
//!
//! Both are seeded by Passerelle's own `seed`. Medplum's in-memory engine
//! has no authorization, so it is an open server here: SMART scope
//! enforcement is tested against hfs only (`smart`, `act`).
//!
//! Where the engines differ, each test states what each one does, as
//! measured against these versions (the first run printed it; the
//! assertions keep it): string search, `Prefer: handling=strict`,
//! transaction atomicity, paging, chained search. The README's "Tested FHIR
//! servers" sums it up.

use crate::common;

use std::collections::BTreeMap;

use passerelle::domain::directory::{Directory, Query};
use passerelle::domain::referral::{Party, Status};
use passerelle::domain::screening::{Answer, ItemResponse, Rules, score};
use passerelle::domain::sdoh::Domain;
use passerelle::fhir::referral::{REFERRAL_ID_SYSTEM, ReferralRecord};
use passerelle::fhir::screening::{
    Coding, ConditionTable, RecordedItem, SCREENING_ID_SYSTEM, ScreeningRecord,
};
use passerelle::fhir::{FhirClient, FhirError, task};
use passerelle::seed;
use passerelle_dev::hfs::Hfs;
use passerelle_dev::medplum::{Medplum, TransactionMode};
use serde_json::{Value, json};
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Hfs,
    Medplum,
}

const BOTH: [Engine; 2] = [Engine::Hfs, Engine::Medplum];

/// A running engine of either kind.
enum Server {
    Hfs(Hfs),
    Medplum(Medplum),
}

impl Server {
    async fn start(engine: Engine) -> Server {
        match engine {
            Engine::Hfs => Server::Hfs(
                Hfs::start(&common::hfs_options())
                    .await
                    .expect("hfs starts"),
            ),
            Engine::Medplum => Server::Medplum(
                Medplum::start(&common::medplum_options(TransactionMode::Atomic))
                    .await
                    .expect("the Medplum engine starts"),
            ),
        }
    }

    /// Started and seeded with the fixtures by `seed::load`.
    async fn seeded(engine: Engine) -> Server {
        match engine {
            Engine::Hfs => Server::Hfs(common::seeded_hfs().await),
            Engine::Medplum => Server::Medplum(common::seeded_medplum().await),
        }
    }

    fn base(&self) -> &Url {
        match self {
            Server::Hfs(h) => h.base(),
            Server::Medplum(m) => m.base(),
        }
    }

    fn client(&self) -> FhirClient {
        common::fhir_client(self.base())
    }
}

fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}

/// A raw request, for what Passerelle's client deliberately never sends
/// (a lenient search) or to see exactly what the server answered.
async fn raw(
    base: &Url,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method, base.join(path).unwrap())
        .header("accept", "application/fhir+json");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/fhir+json")
            .body(b.to_string());
    }
    let answer = r.send().await.expect("the engine answers");
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(base: &Url, path: &str) -> (u16, Value) {
    raw(base, reqwest::Method::GET, path, &[], None).await
}

/// The ids of a searchset's matches.
fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["search"]["mode"] != "include" && e["resource"]["resourceType"] != "OperationOutcome"
        })
        .filter_map(|e| e["resource"]["id"].as_str().map(String::from))
        .collect()
}

fn count(counts: &[(&str, u64)], t: &str) -> u64 {
    counts
        .iter()
        .find(|(k, _)| *k == t)
        .map(|(_, n)| *n)
        .unwrap()
}

#[tokio::test]
async fn seed_loads_the_same_fixtures_idempotently_and_removes_them_on_both_engines() {
    for engine in BOTH {
        let server = Server::start(engine).await;
        let client = server.client();
        let schema = common::schema();
        seed::load(&client, &schema, None, 0, today())
            .await
            .unwrap_or_else(|e| panic!("{engine:?}: {e}"));
        let first = seed::count_seeded(&client).await.unwrap();
        for (t, n) in [
            ("Patient", 13),
            ("Organization", 12),
            ("Coverage", 14),
            ("ClaimResponse", 6),
            ("Task", 8),
            ("Observation", 27),
            ("Condition", 18),
        ] {
            assert_eq!(count(&first, t), n, "{engine:?}: {t}");
        }
        // Every entry is a PUT to a fixed id (FHIR R4 http.html#upsert):
        // both engines update in place.
        seed::load(&client, &schema, None, 0, today())
            .await
            .unwrap();
        assert_eq!(
            seed::count_seeded(&client).await.unwrap(),
            first,
            "{engine:?}: a second run changes no count"
        );
        let removed = seed::remove(&client).await.unwrap();
        assert_eq!(removed as u64, first.iter().map(|(_, n)| n).sum::<u64>());
        assert!(
            seed::count_seeded(&client)
                .await
                .unwrap()
                .iter()
                .all(|(_, n)| *n == 0),
            "{engine:?}: nothing tagged is left"
        );
    }
}

#[tokio::test]
async fn check_measures_the_writes_on_both_engines_and_reads_only_hfs_declarations() {
    for engine in BOTH {
        let server = Server::start(engine).await;
        let client = server.client();
        let rows = passerelle::check::probe(&client, false).await.unwrap();
        let row = |c: &str| {
            rows.iter()
                .find(|r| r.capability == c)
                .unwrap_or_else(|| panic!("{engine:?}: no row {c}"))
        };
        // What both engines do, measured by the write probe.
        assert!(row("write (transaction)").ok, "{engine:?}: {rows:#?}");
        assert_eq!(
            row("ifNoneExist in a transaction").detail,
            "sent twice, created once",
            "{engine:?}"
        );
        assert_eq!(
            row("update with If-Match").detail,
            "a stale update was refused (412)",
            "{engine:?}"
        );
        match engine {
            Engine::Hfs => assert!(rows.iter().all(|r| r.ok), "{rows:#?}"),
            Engine::Medplum => {
                // The router has no `metadata` route: GET metadata is taken
                // for a search of a type named "metadata" and answered with
                // an empty searchset. Check says so once, first; every
                // declared row is then "not declared".
                assert_eq!(rows[0].capability, passerelle::check::CAPABILITY_STATEMENT);
                assert!(
                    rows[0]
                        .detail
                        .starts_with("GET metadata answered with Bundle"),
                    "{rows:#?}"
                );
                assert!(!row("transaction").ok);
                assert!(!row("search Patient?name").ok);
            }
        }
        let left = client
            .search("Basic", &[("_tag", format!("{}|check", seed::TAG_SYSTEM))])
            .await
            .unwrap();
        assert_eq!(
            left.raw("Basic").count(),
            0,
            "{engine:?}: the probe cleaned up"
        );
    }
}

#[tokio::test]
async fn the_visit_page_and_the_patient_picker_read_the_same_chart_on_both_engines() {
    passerelle::telemetry::init("warn");
    for engine in BOTH {
        let server = Server::seeded(engine).await;
        let (address, _stop) =
            common::start_app(server.base(), common::AppOptions::default()).await;
        let http = reqwest::Client::new();
        let page = |query: String| {
            let http = http.clone();
            let url = format!(
                "{address}/launch/open?iss={}{query}",
                common::enc(server.base().as_str())
            );
            async move {
                let r = http.get(url).send().await.unwrap();
                (
                    r.status().as_u16(),
                    common::unescape(&r.text().await.unwrap()),
                )
            }
        };
        let (status, html) = page("&patient=pas-p01".into()).await;
        assert_eq!(status, 200, "{engine:?}: {html}");
        // Everything of tests/it/visit.rs's first test: eight reads and
        // searches, `_include=Coverage:payor`, `_sort=-date`.
        for expected in common::P01_VISIT_PAGE {
            assert!(html.contains(expected), "{engine:?}: missing {expected:?}");
        }
        let food = html.split("Food insecurity</th>").nth(1).expect("food row");
        assert!(
            food.trim_start()
                .starts_with("<td><strong class=\"positive\">Positive"),
            "{engine:?}: {food:.80}"
        );
        // A Part D denial quoted verbatim, on another chart.
        let (_, html) = page("&patient=pas-p02".into()).await;
        assert!(html.contains("Drug not on formulary. Formulary alternative: warfarin."));

        // The picker lists all 13 patients, then searches by name.
        let (status, html) = page(String::new()).await;
        assert_eq!(status, 200);
        assert!(
            html.contains("Jean Dupont") && html.contains("Ana Souza"),
            "{engine:?}"
        );
        let (_, html) = page("&name=dupont".into()).await;
        assert!(html.contains("Jean Dupont"), "{engine:?}: prefix, any case");
        // Where string search differs (FHIR R4 search.html#string: "starts
        // with", case- and accent-insensitive). hfs: starts-with, accents
        // folded. Medplum's in-memory matcher (@medplum/core
        // src/search/match.ts): `contains`, case-insensitive, accents kept.
        let (_, html) = page("&name=upon".into()).await;
        assert_eq!(
            html.contains("Jean Dupont"),
            engine == Engine::Medplum,
            "{engine:?}: `upon` is inside Dupont, not at its start"
        );
        let (_, html) = page("&name=garcia".into()).await;
        assert_eq!(
            html.contains("María José García"),
            engine == Engine::Hfs,
            "{engine:?}: garcia against García"
        );
    }
}

const RULES: &str = r#"{"rules": [
    {"question": "88122-7", "positive_answers": ["LA28397-0", "LA6729-3"], "domain": "food-insecurity", "source": "Hunger Vital Sign"},
    {"question": "93030-5", "positive_answers": ["LA33-6"], "domain": "transportation-insecurity", "source": "CMS AHC HRSN"}
]}"#;

fn answered(link: &str, q: &str, code: &str) -> RecordedItem {
    RecordedItem {
        link_id: link.into(),
        text: format!("Question {q}"),
        question: Coding {
            system: "http://loinc.org".into(),
            code: q.into(),
            display: q.into(),
        },
        answers: vec![(
            Answer::Code(code.into()),
            Some(Coding {
                system: "http://loinc.org".into(),
                code: code.into(),
                display: code.into(),
            }),
        )],
        absent: None,
        groups: Vec::new(),
    }
}

/// Food insecurity positive, transportation positive: 1 QuestionnaireResponse,
/// 2 Observations, 2 Conditions, in one transaction with `ifNoneExist`.
fn screening(id: &str) -> Value {
    let items = vec![
        answered("hvs1", "88122-7", "LA28397-0"),
        answered("tr", "93030-5", "LA33-6"),
    ];
    let responses: Vec<ItemResponse> = items.iter().map(RecordedItem::response).collect();
    let scored = score(&Rules::parse(RULES).unwrap(), &responses, &BTreeMap::new());
    passerelle::fhir::screening::transaction(
        &ScreeningRecord {
            id,
            patient: "Patient/pas-p06",
            encounter: Some("Encounter/pas-enc-06"),
            author: Some("Practitioner/pas-prac-moreau"),
            questionnaire: "http://passerelle.example.org/fhir/Questionnaire/ahc-hrsn-core|1.0.0",
            language: "fr",
            authored: "2026-11-22T10:00:00-05:00",
            items: &items,
            scored: &scored,
        },
        &ConditionTable::shipped(),
    )
}

/// This screening's resources of type `t`, by identifier prefix.
async fn recorded(client: &FhirClient, t: &str, id: &str) -> Vec<Value> {
    let page = client
        .search(
            t,
            &[
                ("subject", "Patient/pas-p06".into()),
                ("_count", "100".into()),
            ],
        )
        .await
        .unwrap();
    page.raw(t)
        .filter(|r| {
            // QuestionnaireResponse.identifier is one Identifier in R4, not a list.
            let ids = r["identifier"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![r["identifier"].clone()]);
            ids.iter().any(|i| {
                i["system"] == SCREENING_ID_SYSTEM
                    && i["value"]
                        .as_str()
                        .is_some_and(|v| v == id || v.starts_with(&format!("{id}/")))
            })
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_screening_is_recorded_once_with_resolving_references_on_both_engines() {
    for engine in BOTH {
        let server = Server::seeded(engine).await;
        let client = server.client();
        let b = screening("scr-eng");
        common::schema().validate_bundle(&b).unwrap();
        let response = client.transaction(&b).await.unwrap();
        assert_eq!(response["type"], "transaction-response", "{engine:?}");
        // Sent again, as the outbox does after a lost answer: nothing new.
        client.transaction(&b).await.unwrap();
        let counts = (
            recorded(&client, "QuestionnaireResponse", "scr-eng")
                .await
                .len(),
            recorded(&client, "Observation", "scr-eng").await.len(),
            recorded(&client, "Condition", "scr-eng").await.len(),
        );
        assert_eq!(counts, (1, 2, 2), "{engine:?}");
        // The urn:uuid references became server references that resolve.
        let conditions = recorded(&client, "Condition", "scr-eng").await;
        let food = conditions
            .iter()
            .find(|c| c["identifier"][0]["value"] == "scr-eng/condition/food-insecurity")
            .unwrap();
        let evidence = food["evidence"][0]["detail"][0]["reference"]
            .as_str()
            .unwrap();
        let (t, id) = evidence.split_once('/').unwrap();
        let obs = client.read_json(t, id).await.unwrap();
        assert_eq!(
            obs.resource["interpretation"][0]["coding"][0]["code"],
            "POS"
        );
        let qr = obs.resource["derivedFrom"][0]["reference"]
            .as_str()
            .unwrap();
        let (t, id) = qr.split_once('/').unwrap();
        assert_eq!(t, "QuestionnaireResponse", "{engine:?}");
        assert!(client.read_json(t, id).await.is_ok(), "{engine:?}");
    }
}

#[tokio::test]
async fn a_referral_is_recorded_once_and_its_task_updated_with_if_match_on_both_engines() {
    let directory = Directory::shipped();
    let service = directory.search(&Query {
        domain: Some(Domain::FoodInsecurity),
        ..Default::default()
    })[0]
        .service
        .clone();
    for engine in BOTH {
        let server = Server::seeded(engine).await;
        let client = server.client();
        // What the refer page reads first (fhir::referral::read_context).
        let ctx = passerelle::fhir::referral::read_context(
            &client,
            "pas-p08",
            &passerelle::domain::coverage::RegimeTable::shipped().payer_type_system,
            today(),
        )
        .await
        .unwrap_or_else(|e| panic!("{engine:?}: {e}"));
        assert!(
            ctx.screenings
                .iter()
                .any(|s| s.domain == Domain::FoodInsecurity && s.positive()),
            "{engine:?}: James Wilson screened positive for food"
        );
        let reasons: Vec<String> = ctx
            .reasons
            .iter()
            .filter(|(d, _)| *d == Domain::FoodInsecurity)
            .map(|(_, r)| r.clone())
            .collect();
        let record = ReferralRecord {
            id: "ref-eng",
            patient: "Patient/pas-p08",
            encounter: None,
            requester: "PractitionerRole/pas-role-moreau",
            domain: Domain::FoodInsecurity,
            service: &service,
            reasons: &reasons,
            screenings: &ctx.screenings,
            concerns: &ctx.concerns,
            authored: "2026-11-22T10:00:00-05:00",
            priority: "routine",
            code: passerelle::fhir::referral::default_code(Domain::FoodInsecurity),
            consent: Some(passerelle::fhir::referral::Consented {
                organization: "Organization/pas-org-practice",
            }),
        };
        let bundle = passerelle::fhir::referral::transaction(&record);
        common::schema().validate_bundle(&bundle).unwrap();
        client
            .transaction(&bundle)
            .await
            .unwrap_or_else(|e| panic!("{engine:?}: {e}"));
        client.transaction(&bundle).await.unwrap();
        let srs = client
            .search(
                "ServiceRequest",
                &[(
                    "identifier",
                    format!("{REFERRAL_ID_SYSTEM}|ref-eng/service-request"),
                )],
            )
            .await
            .unwrap();
        let srs: Vec<&Value> = srs.raw("ServiceRequest").collect();
        assert_eq!(srs.len(), 1, "{engine:?}: recorded once");
        let consent = srs[0]["supportingInfo"][0]["reference"].as_str().unwrap();
        let (t, id) = consent.split_once('/').unwrap();
        assert_eq!(
            client.read_json(t, id).await.unwrap().resource["resourceType"],
            "Consent"
        );
        let tasks = client
            .search(
                "Task",
                &[("identifier", format!("{REFERRAL_ID_SYSTEM}|ref-eng/task"))],
            )
            .await
            .unwrap();
        let task_id = tasks.raw("Task").next().expect("the Task")["id"]
            .as_str()
            .unwrap()
            .to_string();

        // A Task update as the task page makes it: read, change, PUT with
        // If-Match; the same version again is stale and refused.
        let read = task::read(&client, Some("Patient/pas-p08"), &task_id)
            .await
            .unwrap();
        assert_eq!(read.view.status.as_deref(), Some("requested"));
        assert!(
            !read.version.is_empty(),
            "{engine:?}: a version for If-Match"
        );
        let change = task::Change {
            to: Status::Accepted,
            party: Party::Performer,
            reason: None,
            note: Some("Pantry confirmed by phone"),
            author: None,
            outcome: None,
            now: "2026-11-23T09:00:00-05:00",
        };
        let accepted = task::apply(read.resource.clone(), &change).unwrap();
        client
            .update(&accepted, Some(&read.version))
            .await
            .unwrap_or_else(|e| panic!("{engine:?}: {e}"));
        let stale = client.update(&accepted, Some(&read.version)).await;
        assert!(
            matches!(stale, Err(FhirError::Conflict { status: 412, .. })),
            "{engine:?}: {stale:?}"
        );
        let now = task::read(&client, None, &task_id).await.unwrap();
        assert_eq!(now.view.status.as_deref(), Some("accepted"), "{engine:?}");
        assert_ne!(now.version, read.version);
    }
}

/// A transaction whose second entry fails (a stale `If-Match`), and the
/// identifier of the Basic its first entry creates.
fn failing_transaction(marker: &str) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f1c1f2e-0000-4000-8000-000000000011",
         "resource": {"resourceType": "Basic", "identifier": [{"system": "urn:passerelle:test", "value": marker}], "code": {"text": "atomicity probe"}},
         "request": {"method": "POST", "url": "Basic"}},
        {"resource": {"resourceType": "Patient", "id": "pas-p01"},
         "request": {"method": "PUT", "url": "Patient/pas-p01", "ifMatch": "W/\"stale\""}}
    ]})
}

async fn basics(base: &Url, marker: &str) -> usize {
    let (_, b) = get(
        base,
        &format!("Basic?identifier=urn:passerelle:test|{marker}"),
    )
    .await;
    ids(&b).len()
}

#[tokio::test]
async fn where_the_engines_differ_each_is_measured() {
    let hfs = Server::seeded(Engine::Hfs).await;
    let medplum = Server::seeded(Engine::Medplum).await;
    let (h, m) = (hfs.base(), medplum.base());

    // An unknown search parameter under `Prefer: handling=strict`, which
    // Passerelle's client sends with every search (FHIR R4
    // search.html#errors). hfs refuses it (400). Medplum ignores the header
    // (fhir-router reads no `prefer`) and an unknown parameter matches
    // nothing: 200 with no results, narrower rather than wider, so no other
    // patient's data leaks, but the error is silent.
    let strict = [("prefer", "handling=strict")];
    let (status, _) = raw(h, reqwest::Method::GET, "Patient?nonsense=1", &strict, None).await;
    assert_eq!(status, 400);
    let (status, b) = raw(m, reqwest::Method::GET, "Patient?nonsense=1", &strict, None).await;
    assert_eq!((status, ids(&b).len()), (200, 0));
    // Lenient: hfs ignores the parameter (all 13 patients), Medplum still
    // matches nothing.
    let lenient = [("prefer", "handling=lenient")];
    let (_, b) = raw(
        h,
        reqwest::Method::GET,
        "Patient?nonsense=1",
        &lenient,
        None,
    )
    .await;
    assert_eq!(ids(&b).len(), 13);
    let (_, b) = raw(
        m,
        reqwest::Method::GET,
        "Patient?nonsense=1",
        &lenient,
        None,
    )
    .await;
    assert_eq!(ids(&b).len(), 0);

    // `:exact` is case-sensitive in FHIR R4 (search.html#string): hfs
    // agrees, Medplum's matcher is case-insensitive.
    let (_, b) = get(h, "Patient?name:exact=dupont").await;
    assert_eq!(ids(&b).len(), 0);
    let (_, b) = get(m, "Patient?name:exact=dupont").await;
    assert_eq!(ids(&b), ["pas-p02"]);

    // `_sort` by birth date, both directions: the same order on both.
    for (sort, first) in [("birthdate", "pas-p02"), ("-birthdate", "pas-p10")] {
        for base in [h, m] {
            let (_, b) = get(base, &format!("Patient?_sort={sort}&_count=4")).await;
            assert_eq!(ids(&b)[0], first, "{base} {sort}");
        }
    }

    // Paging: hfs gives a `next` link; Medplum's MemoryRepository cuts the
    // page at `_count` and gives `total` but no link (its server adds the
    // links, the in-memory engine does not). Passerelle follows `next`
    // only, so on this engine a search with more matches than its `_count`
    // (20 to 200 in crates/fhir, the queue's pages) stops at the first
    // page; the fixtures stay below those counts.
    let (_, b) = get(h, "Patient?_count=5").await;
    assert_eq!(ids(&b).len(), 5);
    assert!(
        b["link"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["relation"] == "next")
    );
    let (_, b) = get(m, "Patient?_count=5").await;
    assert_eq!((ids(&b).len(), b["total"].as_u64()), (5, Some(13)));
    assert!(b["link"].is_null());

    // `_include`: both return the included payer, marked `include`.
    for base in [h, m] {
        let (_, b) = get(
            base,
            "Coverage?beneficiary=Patient/pas-p01&_include=Coverage:payor",
        )
        .await;
        let included: Vec<&str> = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .filter_map(|e| e["resource"]["id"].as_str())
            .collect();
        assert_eq!(included, ["pas-org-sunrise"], "{base}");
    }

    // Chained search (Passerelle uses none): with the target type both
    // work; without it, on a reference to several types (Observation.subject),
    // hfs resolves it (to Patient), Medplum refuses (400), which R4 allows
    // (search.html#chaining).
    for base in [h, m] {
        let (_, b) = get(base, "Observation?subject:Patient.name=dupont").await;
        assert_eq!(ids(&b).len(), 2, "{base}");
    }
    let (status, b) = get(h, "Observation?subject.name=dupont").await;
    assert_eq!((status, ids(&b).len()), (200, 2));
    let (status, _) = get(m, "Observation?subject.name=dupont").await;
    assert_eq!(status, 400);

    // Conditional create (R4 http.html#ccreate): no match creates (201),
    // one match answers it (200), two matches are refused (412) on both.
    for base in [h, m] {
        let basic = json!({"resourceType": "Basic", "identifier": [{"system": "urn:passerelle:test", "value": "cc"}], "code": {"text": "cc"}});
        let cond = [("if-none-exist", "identifier=urn:passerelle:test|cc")];
        let (first, a) = raw(base, reqwest::Method::POST, "Basic", &cond, Some(&basic)).await;
        let (second, b) = raw(base, reqwest::Method::POST, "Basic", &cond, Some(&basic)).await;
        assert_eq!((first, second), (201, 200), "{base}");
        assert_eq!(a["id"], b["id"]);
        raw(base, reqwest::Method::POST, "Basic", &[], Some(&basic)).await;
        let (third, _) = raw(base, reqwest::Method::POST, "Basic", &cond, Some(&basic)).await;
        assert_eq!(third, 412, "{base}");
    }

    // Transaction atomicity (R4 http.html#transaction: all or nothing).
    // hfs rolls back: 400 naming the entry, the first entry not kept.
    let client = hfs.client();
    let err = client
        .transaction(&failing_transaction("tx-hfs"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FhirError::Refused { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(basics(h, "tx-hfs").await, 0, "hfs rolled back");
    // Medplum, atomic mode: answers the failing entry's 412, but its
    // MemoryRepository cannot roll back, so the first entry stays.
    let client = medplum.client();
    let err = client
        .transaction(&failing_transaction("tx-mp"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FhirError::Conflict { status: 412, .. }),
        "{err:?}"
    );
    assert_eq!(
        basics(m, "tx-mp").await,
        1,
        "Medplum in memory kept the first entry"
    );
    // Medplum, entry-by-entry mode: 200 with the failure inside the
    // response. Passerelle's client now takes that for the failure it is
    // (it used to report the transaction as recorded).
    let entries = Medplum::start(&common::medplum_options(TransactionMode::Entries))
        .await
        .unwrap();
    let (status, b) = raw(
        entries.base(),
        reqwest::Method::POST,
        "",
        &[],
        Some(&failing_transaction("tx-entries")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(b["type"], "transaction-response");
    assert_eq!(b["entry"][0]["response"]["status"], "201");
    assert_eq!(b["entry"][1]["response"]["status"], "404");
    let err = common::fhir_client(entries.base())
        .transaction(&failing_transaction("tx-entries-2"))
        .await
        .unwrap_err();
    match &err {
        FhirError::EntryFailed { index, status, .. } => {
            assert_eq!((*index, *status), (1, 404), "{err}");
            assert!(err.to_string().contains("Bundle.entry[1]"), "{err}");
        }
        other => panic!("{other:?}"),
    }
}
