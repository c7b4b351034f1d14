//! `seed` and `check` against a real FHIR server: seeding twice gives the same
//! counts, `--remove` leaves nothing tagged, generated patients add exactly
//! what the generator says, and the conformance probe reports what the
//! server can do. The binary itself is run too, as an integrator would.

use crate::common;

use passerelle::seed::{self, generate};
use passerelle_dev::hfs::Hfs;

fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}

fn count(counts: &[(&str, u64)], t: &str) -> u64 {
    counts
        .iter()
        .find(|(k, _)| *k == t)
        .map(|(_, n)| *n)
        .unwrap()
}

#[tokio::test]
async fn seeding_is_idempotent_generates_known_counts_and_removes_cleanly() {
    let hfs = Hfs::start(&common::hfs_options()).await.unwrap();
    let client = common::fhir_client(hfs.base());
    let schema = common::schema();

    seed::load(&client, &schema, None, 0, today())
        .await
        .unwrap();
    let first = seed::count_seeded(&client).await.unwrap();
    assert_eq!(count(&first, "Patient"), 13);
    assert_eq!(count(&first, "Organization"), 12);
    assert_eq!(count(&first, "Coverage"), 14);
    assert_eq!(count(&first, "ClaimResponse"), 6);

    seed::load(&client, &schema, None, 0, today())
        .await
        .unwrap();
    assert_eq!(
        seed::count_seeded(&client).await.unwrap(),
        first,
        "a second run changes no count"
    );

    // 30 generated patients: 5 resources each, and a denial + appeal for every third.
    seed::load(&client, &schema, None, 30, today())
        .await
        .unwrap();
    let with_generated = seed::count_seeded(&client).await.unwrap();
    assert_eq!(count(&with_generated, "Patient"), 13 + 30);
    assert_eq!(
        count(&with_generated, "Task"),
        count(&first, "Task") + 30 + generate::appeal_count(30) as u64
    );

    let removed = seed::remove(&client).await.unwrap();
    let total: u64 = with_generated.iter().map(|(_, n)| n).sum();
    assert_eq!(removed as u64, total);
    assert!(
        seed::count_seeded(&client)
            .await
            .unwrap()
            .iter()
            .all(|(_, n)| *n == 0)
    );
}

#[tokio::test]
async fn check_reports_each_capability_of_hfs_and_its_write_probe_leaves_nothing() {
    let hfs = Hfs::start(&common::hfs_options()).await.unwrap();
    let client = common::fhir_client(hfs.base());
    let rows = passerelle::check::probe(&client, false).await.unwrap();
    let row = |c: &str| {
        rows.iter()
            .find(|r| r.capability == c)
            .unwrap_or_else(|| panic!("no row {c}"))
    };
    assert!(row("FHIR version 4.0.x (R4)").ok);
    assert!(row("search Task?patient").ok);
    assert!(row("search Coverage?beneficiary").ok);
    assert!(row("transaction").ok);
    assert!(
        row("write (transaction)").ok,
        "{:?}",
        row("write (transaction)")
    );
    let idem = row("ifNoneExist in a transaction");
    assert!(idem.ok, "{idem:?}");
    assert_eq!(idem.detail, "sent twice, created once");
    let if_match = row("update with If-Match");
    assert!(if_match.ok, "{if_match:?}");
    assert_eq!(if_match.detail, "a stale update was refused (412)");
    // Every search the loaders send (fhir::searches::ALL), as hfs 0.2.7
    // declares them, and the ones the issue names.
    for c in [
        "search DocumentReference?related",
        "search MedicationRequest?subject",
        "search MedicationRequest?status",
        "search Condition?clinical-status",
        "search Coverage?status",
        "search Task?_lastUpdated",
        "_include=Task:focus",
        "_include=ClaimResponse:insurer",
    ] {
        assert!(row(c).ok, "{:?}", row(c));
    }
    // What hfs 0.2.7 does, measured: it honours Prefer: handling=strict
    // (an unknown parameter is a 400), accepts our _sorts, records a
    // transaction of conditional creates the size of the largest Passerelle
    // sends (23 entries), and applies a
    // transaction with a failing entry as a whole (400, nothing kept).
    let strict = row("Prefer: handling=strict");
    assert!(strict.ok, "{strict:?}");
    assert_eq!(
        strict.detail,
        "an unknown search parameter was refused (400)"
    );
    for sort in [
        "search Encounter?_sort=-date",
        "search Observation?_sort=-date",
        "search MedicationRequest?_sort=authoredon",
    ] {
        assert_eq!(row(sort).detail, "accepted", "{:?}", row(sort));
    }
    let n = passerelle::fhir::transactions::largest().entries;
    let full = row(&format!("transaction of {n} entries (ifNoneExist)"));
    assert!(full.ok, "{full:?}");
    let atomic = row("transaction atomicity");
    assert!(atomic.ok, "{atomic:?}");
    assert!(
        atomic
            .detail
            .starts_with("the transaction was refused (The FHIR server refused the request (400)")
            && atomic.detail.ends_with("; nothing of it was kept"),
        "{atomic:?}"
    );
    assert!(
        rows.iter().all(|r| r.ok),
        "hfs offers everything Passerelle uses: {rows:#?}"
    );
    // The probes cleaned up after themselves.
    for t in ["Basic", "Observation", "Patient"] {
        let left = client
            .search(t, &[("_tag", format!("{}|check", seed::TAG_SYSTEM))])
            .await
            .unwrap();
        assert_eq!(left.raw(t).count(), 0, "{t} left behind");
    }
    // Every row is either ok or names the feature it disables.
    for r in &rows {
        assert!(r.ok || !r.needed_by.is_empty());
    }
}

#[tokio::test]
async fn the_binary_seeds_and_checks_a_server_like_an_integrator_would() {
    let hfs = Hfs::start(&common::hfs_options()).await.unwrap();
    let base = hfs.base().to_string();
    let (code, stdout, stderr) = run(&["seed", "--fhir-base", &base]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("Patient                13"), "{stdout}");

    let (_, stdout, _) = run(&["check", "--fhir-base", &base]).await;
    assert!(stdout.contains("ok       transaction"), "{stdout}");
    assert!(stdout.contains("0 warnings, 0 missing"), "{stdout}");
    assert!(
        stdout.contains("ok       transaction atomicity"),
        "{stdout}"
    );
    println!("{stdout}");

    let (code, stdout, _) = run(&["seed", "--remove", "--fhir-base", &base]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("Patient                0"), "{stdout}");

    // An unreachable server: a clear message and a failing exit code.
    let closed = passerelle_dev::hfs::free_port().unwrap();
    let (code, _, stderr) = run(&[
        "check",
        "--fhir-base",
        &format!("http://127.0.0.1:{closed}/fhir"),
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("could not be reached"), "{stderr}");
}

#[tokio::test]
async fn check_fails_on_a_server_that_refuses_a_transaction_of_the_size_passerelle_sends() {
    let hfs = Hfs::start(&common::hfs_options()).await.unwrap();
    let largest = passerelle::fhir::transactions::largest();
    // A server that takes Bundles of up to 20 entries.
    let capped = common::proxy::Proxy::start(hfs.base()).await;
    capped.fault("POST /$", common::proxy::Fault::EntriesOver(20));
    let (code, stdout, _) = run(&["check", "--fhir-base", capped.base.as_str()]).await;
    println!("{stdout}");
    assert_eq!(code, Some(1), "{stdout}");
    let n = largest.entries;
    assert!(n > 20, "{largest:?}");
    let line = stdout
        .lines()
        .find(|l| l.contains(&format!("transaction of {n} entries")))
        .unwrap_or_else(|| panic!("no row for {n} entries: {stdout}"));
    assert!(line.starts_with("MISSING"), "{line}");
    assert!(
        line.contains(&format!(
            "the server refused a transaction of {n} entries, the largest Passerelle sends ({})",
            largest.what
        )) && line.contains(&format!(
            "a Bundle of {n} entries: this server accepts at most 20"
        )),
        "the size needed and the server's answer: {line}"
    );
    assert!(
        line.ends_with(&format!(
            "-> disables: recording a screening of up to {n} entries in one transaction"
        )),
        "{line}"
    );
}

/// Run the `passerelle` binary; returns its exit code, stdout and stderr.
async fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(args)
        .env("PASSERELLE_DEFINITIONS_DIR", common::definitions_dir())
        .env("PASSERELLE_LOG", "warn")
        .output()
        .await
        .expect("passerelle runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn serve_refuses_a_configuration_it_cannot_honour() {
    let (code, _, stderr) = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--screening-instrument",
        "nope",
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("unknown screening instrument \"nope\"; known: ahc-hrsn-core"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--ehrs",
        "/nonexistent/ehrs.json",
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("cannot read the EHR list /nonexistent/ehrs.json"),
        "{stderr}"
    );
    // A file store without a session key would lose the outbox at restart.
    let ehrs = std::env::temp_dir().join(format!(
        "passerelle-no-key-{}.json",
        passerelle::auth::keys::random_token(8)
    ));
    std::fs::write(&ehrs, "[]").unwrap();
    let db = ehrs.with_extension("db");
    let (code, _, stderr) = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--ehrs",
        ehrs.to_str().unwrap(),
        "--database-url",
        &format!("sqlite://{}?mode=rwc", db.display()),
    ])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("PASSERELLE_SESSION_KEY is required with a database file"),
        "{stderr}"
    );
    assert!(!db.exists(), "nothing was created before refusing");
}
