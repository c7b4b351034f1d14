//! A screening recorded against a real FHIR server (hfs): exactly the
//! expected resources, references that resolve, and no duplicate when the
//! transaction is sent again after a lost response or a server error.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::proxy::{Fault, Proxy};
use passerelle::domain::screening::{Absent, Answer, ItemResponse, Rules, score};
use passerelle::fhir::screening::{
    Coding, ConditionTable, RecordedItem, SCREENING_ID_SYSTEM, ScreeningRecord, transaction,
};
use passerelle::fhir::{FhirClient, FhirError, Limits};
use serde_json::Value;

const RULES: &str = r#"{"rules": [
    {"question": "88122-7", "positive_answers": ["LA28397-0", "LA6729-3"], "domain": "food-insecurity", "source": "Hunger Vital Sign"},
    {"question": "88123-5", "positive_answers": ["LA28397-0", "LA6729-3"], "domain": "food-insecurity", "source": "Hunger Vital Sign"},
    {"question": "93030-5", "positive_answers": ["LA33-6"], "domain": "transportation-insecurity", "source": "CMS AHC HRSN"}
]}"#;

fn answered(link: &str, q: &str, code: &str, display: &str) -> RecordedItem {
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
                display: display.into(),
            }),
        )],
        absent: None,
        groups: Vec::new(),
    }
}

/// Hunger Vital Sign positive, transportation positive, one item skipped.
pub(crate) fn bundle(id: &str) -> Value {
    let items = vec![
        answered("hvs1", "88122-7", "LA28397-0", "Often true"),
        answered("hvs2", "88123-5", "LA28398-8", "Never true"),
        answered("tr", "93030-5", "LA33-6", "Yes"),
        RecordedItem {
            link_id: "ut".into(),
            text: "Utilities".into(),
            question: Coding {
                system: "http://loinc.org".into(),
                code: "96779-4".into(),
                display: "Utilities".into(),
            },
            answers: vec![],
            absent: Some(Absent::Declined),
            groups: Vec::new(),
        },
    ];
    let responses: Vec<ItemResponse> = items.iter().map(RecordedItem::response).collect();
    let scored = score(&Rules::parse(RULES).unwrap(), &responses, &BTreeMap::new());
    transaction(
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

async fn count(client: &FhirClient, t: &str, id: &str) -> usize {
    // Identifiers hold "{id}" or "{id}/…": count this screening's resources by subject and prefix.
    let page = client
        .search_all(
            t,
            &[
                ("subject", "Patient/pas-p06".into()),
                ("_count", "100".into()),
            ],
            10,
        )
        .await
        .unwrap();
    page.raw(t)
        .filter(|r| {
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
        .count()
}

async fn counts(client: &FhirClient, id: &str) -> (usize, usize, usize) {
    (
        count(client, "QuestionnaireResponse", id).await,
        count(client, "Observation", id).await,
        count(client, "Condition", id).await,
    )
}

#[tokio::test]
async fn a_screening_creates_exactly_the_expected_resources_and_its_references_resolve() {
    let hfs = common::seeded_hfs().await;
    let client = common::fhir_client(hfs.base());
    let b = bundle("scr-a");
    common::schema().validate_bundle(&b).unwrap();
    let response = client.transaction(&b).await.unwrap();
    assert_eq!(response["type"], "transaction-response");
    // 1 QR, 4 Observations (one declined), 2 Conditions (food, transportation).
    assert_eq!(counts(&client, "scr-a").await, (1, 4, 2));
    let obs = client
        .search(
            "Observation",
            &[
                ("subject", "Patient/pas-p06".into()),
                ("code", "http://loinc.org|88122-7".into()),
            ],
        )
        .await
        .unwrap();
    let o = obs
        .raw("Observation")
        .find(|o| o["identifier"][0]["value"] == "scr-a/obs/hvs1")
        .unwrap();
    let qr_ref = o["derivedFrom"][0]["reference"].as_str().unwrap();
    let (t, id) = qr_ref.split_once('/').unwrap();
    assert_eq!(
        t, "QuestionnaireResponse",
        "the urn:uuid became a server reference"
    );
    assert!(client.read_json(t, id).await.is_ok());
    let conditions = client
        .search("Condition", &[("subject", "Patient/pas-p06".into())])
        .await
        .unwrap();
    let food = conditions
        .raw("Condition")
        .find(|c| c["identifier"][0]["value"] == "scr-a/condition/food-insecurity")
        .unwrap();
    let evidence = food["evidence"][0]["detail"][0]["reference"]
        .as_str()
        .unwrap();
    let (t, id) = evidence.split_once('/').unwrap();
    let linked = client.read_json(t, id).await.unwrap();
    assert_eq!(
        linked.resource["interpretation"][0]["coding"][0]["code"],
        "POS"
    );
}

#[tokio::test]
async fn sending_again_after_a_lost_response_or_a_server_error_creates_nothing_twice() {
    let hfs = common::seeded_hfs().await;
    let proxy = Proxy::start(hfs.base()).await;
    let short = FhirClient::new(
        FhirClient::http_client(),
        proxy.base.clone(),
        Limits {
            timeout: Duration::from_secs(2),
            ..Limits::default()
        },
    );
    let direct = common::fhir_client(hfs.base());

    // The server records it, the answer is lost: a timeout, never retried blindly.
    proxy.fault("/", Fault::ForwardThenHang);
    proxy.reset_count();
    let err = short.transaction(&bundle("scr-b")).await.unwrap_err();
    assert!(matches!(err, FhirError::Timeout { .. }), "{err:?}");
    assert_eq!(proxy.count(), 1, "the transaction was sent once");
    proxy.clear();
    proxy.wait_answered(1, Duration::from_secs(60)).await;
    assert_eq!(
        counts(&direct, "scr-b").await,
        (1, 4, 2),
        "it was recorded despite the lost answer"
    );
    // Sent again, as the outbox does: the same identifiers, nothing new.
    short.transaction(&bundle("scr-b")).await.unwrap();
    assert_eq!(counts(&direct, "scr-b").await, (1, 4, 2));

    // A server error: nothing recorded, and a later send records it once.
    proxy.fault("/", Fault::Status(500, String::new()));
    assert!(matches!(
        short.transaction(&bundle("scr-c")).await,
        Err(FhirError::Server { status: 500, .. })
    ));
    proxy.clear();
    assert_eq!(counts(&direct, "scr-c").await, (0, 0, 0));
    short.transaction(&bundle("scr-c")).await.unwrap();
    short.transaction(&bundle("scr-c")).await.unwrap();
    assert_eq!(counts(&direct, "scr-c").await, (1, 4, 2));
}

#[tokio::test]
async fn a_referral_after_a_positive_safety_screen_is_recorded_once_with_do_not_contact() {
    use passerelle::domain::directory::{Directory, Query};
    use passerelle::domain::sdoh::Domain;
    use passerelle::fhir::referral::{REFERRAL_ID_SYSTEM, ReferralRecord, transaction as referral};

    let hfs = common::seeded_hfs().await;
    let client = common::fhir_client(hfs.base());
    let directory = Directory::shipped();
    let service = directory.search(&Query {
        domain: Some(Domain::FoodInsecurity),
        ..Default::default()
    })[0]
        .service
        .clone();
    let reasons = vec!["Condition/pas-cond-08b".to_string()];
    let record = ReferralRecord {
        id: "ref-itest",
        patient: "Patient/pas-p08",
        encounter: Some("Encounter/pas-enc-08"),
        requester: "PractitionerRole/pas-role-moreau",
        domain: Domain::FoodInsecurity,
        service: &service,
        reasons: &reasons,
        screenings: &[passerelle::domain::visit::DomainScreening {
            domain: Domain::IntimatePartnerViolence,
            date: Some(time::OffsetDateTime::now_utc().date()),
            finding: passerelle::domain::visit::Finding::Positive,
            preliminary: false,
            source: None,
            evidence: None,
        }],
        concerns: &[],
        authored: "2026-11-22T10:00:00-05:00",
        priority: "routine",
        code: passerelle::fhir::referral::default_code(Domain::FoodInsecurity),
        consent: Some(passerelle::fhir::referral::Consented {
            organization: "Organization/pas-org-practice",
        }),
    };
    let bundle = referral(&record);
    common::schema().validate_bundle(&bundle).unwrap();
    client.transaction(&bundle).await.unwrap();
    client.transaction(&bundle).await.unwrap();
    let srs = client
        .search(
            "ServiceRequest",
            &[(
                "identifier",
                format!("{REFERRAL_ID_SYSTEM}|ref-itest/service-request"),
            )],
        )
        .await
        .unwrap();
    let srs: Vec<_> = srs.raw("ServiceRequest").collect();
    assert_eq!(srs.len(), 1, "sent twice, recorded once");
    assert_eq!(
        srs[0]["orderDetail"][0]["coding"][0]["code"],
        "contacting-subject-prohibited"
    );
    let tasks = client
        .search(
            "Task",
            &[("identifier", format!("{REFERRAL_ID_SYSTEM}|ref-itest/task"))],
        )
        .await
        .unwrap();
    let task = tasks.raw("Task").next().unwrap();
    assert_eq!(
        task["focus"]["reference"],
        format!("ServiceRequest/{}", srs[0]["id"].as_str().unwrap())
    );
    assert_eq!(task["status"], "requested");
}
