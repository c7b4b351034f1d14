//! The community resource directory (Open Referral HSDS 3.1 data, shipped in
//! `fixtures/directory/hsds.json`) and its search: by domain (or peer
//! support), distance from the patient's postal code, language, eligibility,
//! capacity and, for medicine costs, the medication covered.
//!
//! Passerelle's own vocabularies travel in HSDS `attributes` (see
//! `fixtures/directory/README.md`): `sdohcc-domain`, `passerelle-category`,
//! `passerelle-capacity`, `passerelle-eligibility` (`required` / `any-of`)
//! and `passerelle-medication`.
//!
//! Eligibility is only partly known from the chart (coverage, age): a
//! requirement excludes a service only when it is a fact Passerelle can
//! judge and the patient does not meet it; the others are listed "to check".

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;

use super::sdoh::Domain;

/// The directory shipped with Passerelle.
pub const SHIPPED_DIRECTORY: &str = include_str!("../../../fixtures/directory/hsds.json");

/// Eligibility facts Passerelle can judge from the chart.
pub const JUDGED_FACTS: [&str; 5] = [
    "medicaid",
    "medicare",
    "uninsured",
    "commercial-insurance",
    "age-60-plus",
];

/// The eligibility facts the chart shows (see [`JUDGED_FACTS`]): payer
/// types of the coverages active on `today` (PHDSC: 1 Medicare, 2 Medicaid,
/// 5 and 6 private and employer plans), no active coverage at all, and age.
pub fn chart_facts(
    coverages: &[crate::coverage::CoverageFacts],
    payer_type_system: &str,
    age: Option<i32>,
    today: time::Date,
) -> BTreeSet<String> {
    let mut facts = BTreeSet::new();
    let active: Vec<_> = coverages.iter().filter(|c| c.is_active_on(today)).collect();
    if active.is_empty() {
        facts.insert("uninsured".to_string());
    }
    for c in active {
        for t in c
            .types
            .iter()
            .filter(|t| t.system.as_deref() == Some(payer_type_system))
        {
            match t.code.chars().next() {
                Some('1') => facts.insert("medicare".to_string()),
                Some('2') => facts.insert("medicaid".to_string()),
                Some('5' | '6') => facts.insert("commercial-insurance".to_string()),
                _ => false,
            };
        }
    }
    if age.is_some_and(|a| a >= 60) {
        facts.insert("age-60-plus".to_string());
    }
    facts
}

/// The directory's medication term for a prescribed drug: its first word,
/// lower-case ("apixaban 5 MG Oral Tablet" → "apixaban"), matched against
/// the services' `passerelle-medication` terms by prefix.
pub fn medication_term(drug: &str) -> Option<String> {
    drug.split_whitespace()
        .next()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| w.len() >= 3)
}

#[derive(Deserialize)]
struct RawFile {
    services: Vec<RawService>,
}

#[derive(Deserialize)]
struct RawService {
    id: String,
    name: String,
    #[serde(default)]
    alternate_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    status: String,
    #[serde(default)]
    eligibility_description: Option<String>,
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    organization: Option<RawOrganization>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    schedules: Vec<RawSchedule>,
    #[serde(default)]
    languages: Vec<RawLanguage>,
    #[serde(default)]
    phones: Vec<RawPhone>,
    #[serde(default)]
    attributes: Vec<RawAttribute>,
    #[serde(default)]
    service_at_locations: Vec<RawServiceAtLocation>,
}

#[derive(Deserialize)]
struct RawOrganization {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    website: Option<String>,
}

#[derive(Deserialize)]
struct RawSchedule {
    #[serde(default)]
    byday: Option<String>,
    #[serde(default)]
    opens_at: Option<String>,
    #[serde(default)]
    closes_at: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawLanguage {
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct RawPhone {
    number: String,
}

#[derive(Deserialize)]
struct RawAttribute {
    #[serde(default)]
    value: Option<String>,
    taxonomy_term: RawTerm,
}

#[derive(Deserialize)]
struct RawTerm {
    code: String,
    taxonomy: String,
}

#[derive(Deserialize)]
struct RawServiceAtLocation {
    location: RawLocation,
}

#[derive(Deserialize)]
struct RawLocation {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
    #[serde(default)]
    addresses: Vec<RawAddress>,
}

#[derive(Deserialize)]
struct RawAddress {
    #[serde(default)]
    address_1: Option<String>,
    #[serde(default)]
    address_2: Option<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    state_province: Option<String>,
    #[serde(default)]
    postal_code: Option<String>,
    #[serde(default)]
    country: Option<String>,
}

/// The organization that runs a service (HSDS `organization`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Provider {
    /// The HSDS organization id: the Organization's identifier.
    pub id: Option<String>,
    pub email: Option<String>,
    pub website: Option<String>,
}

/// Where a service is given (HSDS `location` and its first address).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Place {
    /// The HSDS location id: the Location's identifier.
    pub id: String,
    pub name: Option<String>,
    pub lines: Vec<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

/// When a service is open (an HSDS weekly `schedule`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hours {
    /// RFC 5545 BYDAY codes (`MO`, `TU`, …), as HSDS writes them.
    pub days: Vec<String>,
    /// `HH:MM`, local wall-clock time.
    pub opens: Option<String>,
    pub closes: Option<String>,
    pub description: Option<String>,
}

/// Whether a service takes new people now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capacity {
    Accepting,
    Waitlist,
    Full,
    Unknown,
}

/// One service, as the search and the referral pages use it.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub organization: String,
    pub description: String,
    pub domains: BTreeSet<Domain>,
    pub categories: BTreeSet<String>,
    pub medications: BTreeSet<String>,
    pub languages: BTreeSet<String>,
    pub capacity: Capacity,
    pub capacity_note: Option<String>,
    pub required: BTreeSet<String>,
    pub any_of: BTreeSet<String>,
    pub eligibility: String,
    pub phone: Option<String>,
    pub location: Option<(f64, f64)>,
    pub postal_code: Option<String>,
    pub provider: Provider,
    /// Where it is given, when the directory publishes an address (safety
    /// services do not).
    pub place: Option<Place>,
    pub hours: Vec<Hours>,
    pub email: Option<String>,
    pub url: Option<String>,
}

/// The directory: active services, and postal-code centroids computed from
/// their locations (for distances from a patient's postal code).
#[derive(Debug, Clone)]
pub struct Directory {
    pub services: Vec<Service>,
    centroids: HashMap<String, (f64, f64)>,
}

/// What a clinician looks for.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    pub domain: Option<Domain>,
    /// Peer-support groups and patient associations, a category of their own.
    pub peer_support: bool,
    pub near_postal_code: Option<&'a str>,
    /// The patient's language (primary subtag): services speaking it.
    pub language: Option<&'a str>,
    /// Eligibility facts known from the chart (see [`JUDGED_FACTS`]): those
    /// true for the patient; the other judged facts are then false. `None`:
    /// nothing known, nothing filtered.
    pub facts: Option<BTreeSet<String>>,
    pub medication: Option<&'a str>,
    /// Show services that are full too (last).
    pub include_full: bool,
}

/// A service found, with its distance and the eligibility left to check.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit<'a> {
    pub service: &'a Service,
    pub km: Option<f64>,
    pub to_check: Vec<String>,
}

fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1, lat2, lon2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

impl Directory {
    pub fn parse(json: &str) -> Result<Directory, String> {
        let raw: RawFile = serde_json::from_str(json)
            .map_err(|e| format!("the directory is not HSDS 3 JSON: {e}"))?;
        let mut services = Vec::new();
        for s in raw.services.into_iter().filter(|s| s.status == "active") {
            let mut service = Service {
                slug: s.alternate_name.clone().unwrap_or_else(|| s.id.clone()),
                id: s.id,
                name: s.name,
                organization: s
                    .organization
                    .as_ref()
                    .map(|o| o.name.clone())
                    .unwrap_or_default(),
                provider: Provider {
                    id: s
                        .organization
                        .as_ref()
                        .and_then(|o| o.id.clone())
                        .or(s.organization_id),
                    email: s.organization.as_ref().and_then(|o| o.email.clone()),
                    website: s.organization.as_ref().and_then(|o| o.website.clone()),
                },
                place: None,
                hours: s
                    .schedules
                    .into_iter()
                    .map(|h| Hours {
                        days: h
                            .byday
                            .unwrap_or_default()
                            .split(',')
                            .map(|d| d.trim().to_uppercase())
                            .filter(|d| !d.is_empty())
                            .collect(),
                        opens: h.opens_at,
                        closes: h.closes_at,
                        description: h.description,
                    })
                    .collect(),
                email: s.email,
                url: s.url,
                description: s.description.unwrap_or_default(),
                domains: BTreeSet::new(),
                categories: BTreeSet::new(),
                medications: BTreeSet::new(),
                languages: s
                    .languages
                    .into_iter()
                    .filter_map(|l| l.code)
                    .map(|c| c.to_lowercase())
                    .collect(),
                capacity: Capacity::Unknown,
                capacity_note: None,
                required: BTreeSet::new(),
                any_of: BTreeSet::new(),
                eligibility: s.eligibility_description.unwrap_or_default(),
                phone: s.phones.into_iter().next().map(|p| p.number),
                location: None,
                postal_code: None,
            };
            for a in s.attributes {
                let code = a.taxonomy_term.code;
                match a.taxonomy_term.taxonomy.as_str() {
                    "sdohcc-domain" => {
                        service.domains.insert(
                            Domain::from_code(&code).ok_or(format!("unknown domain {code:?}"))?,
                        );
                    }
                    "passerelle-category" => {
                        service.categories.insert(code);
                    }
                    "passerelle-medication" => {
                        service.medications.insert(code);
                    }
                    "passerelle-capacity" => {
                        service.capacity = match code.as_str() {
                            "accepting" => Capacity::Accepting,
                            "waitlist" => Capacity::Waitlist,
                            "full" => Capacity::Full,
                            _ => Capacity::Unknown,
                        };
                        service.capacity_note = a.value;
                    }
                    "passerelle-eligibility" => {
                        if a.value.as_deref() == Some("any-of") {
                            service.any_of.insert(code);
                        } else {
                            service.required.insert(code);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(sal) = s.service_at_locations.into_iter().next() {
                if let (Some(lat), Some(lon)) = (sal.location.latitude, sal.location.longitude) {
                    service.location = Some((lat, lon));
                }
                let address = sal.location.addresses.into_iter().next();
                service.postal_code = address.as_ref().and_then(|a| a.postal_code.clone());
                if let (Some(id), Some(a)) = (sal.location.id, address) {
                    service.place = Some(Place {
                        id,
                        name: sal.location.name,
                        lines: [a.address_1, a.address_2]
                            .into_iter()
                            .flatten()
                            .filter(|l| !l.trim().is_empty())
                            .collect(),
                        city: a.city,
                        state: a.state_province,
                        postal_code: a.postal_code,
                        country: a.country,
                    });
                }
            }
            services.push(service);
        }
        let mut sums: HashMap<String, (f64, f64, f64)> = HashMap::new();
        for s in &services {
            if let (Some(p), Some((lat, lon))) = (&s.postal_code, s.location) {
                let e = sums.entry(p.clone()).or_default();
                *e = (e.0 + lat, e.1 + lon, e.2 + 1.0);
            }
        }
        let centroids = sums
            .into_iter()
            .map(|(p, (a, b, n))| (p, (a / n, b / n)))
            .collect();
        Ok(Directory {
            services,
            centroids,
        })
    }

    pub fn shipped() -> Directory {
        Directory::parse(SHIPPED_DIRECTORY).expect("the shipped directory is valid (tested)")
    }

    /// Services matching `q`: those taking people first, then the nearest.
    pub fn search(&self, q: &Query) -> Vec<Hit<'_>> {
        let origin = q
            .near_postal_code
            .and_then(|p| self.centroids.get(p))
            .copied();
        let judged = |fact: &String| JUDGED_FACTS.contains(&fact.as_str());
        let mut hits: Vec<Hit> = self
            .services
            .iter()
            .filter(|s| match (q.domain, q.peer_support) {
                (_, true) => s.categories.contains("peer-support"),
                (Some(d), false) => s.domains.contains(&d),
                (None, false) => true,
            })
            .filter(|s| {
                q.language
                    .is_none_or(|l| s.languages.contains(&l.to_lowercase()))
            })
            .filter(|s| {
                q.medication
                    .is_none_or(|m| s.medications.iter().any(|c| c.starts_with(m)))
            })
            .filter(|s| q.include_full || s.capacity != Capacity::Full)
            .filter(|s| {
                let Some(facts) = &q.facts else { return true };
                let required = s
                    .required
                    .iter()
                    .filter(|f| judged(f))
                    .all(|f| facts.contains(f));
                let judged_any: Vec<&String> = s.any_of.iter().filter(|f| judged(f)).collect();
                let unjudged_any = s.any_of.iter().any(|f| !judged(f));
                let any = judged_any.is_empty()
                    || unjudged_any
                    || judged_any.iter().any(|f| facts.contains(*f));
                required && any
            })
            .map(|s| Hit {
                km: origin.zip(s.location).map(|(a, b)| haversine_km(a, b)),
                to_check: s
                    .required
                    .iter()
                    .chain(&s.any_of)
                    .filter(|f| !judged(f))
                    .cloned()
                    .collect(),
                service: s,
            })
            .collect();
        hits.sort_by(|a, b| {
            a.service
                .capacity
                .cmp(&b.service.capacity)
                .then(
                    a.km.unwrap_or(f64::MAX)
                        .total_cmp(&b.km.unwrap_or(f64::MAX)),
                )
                .then(a.service.name.cmp(&b.service.name))
        });
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        Directory::shipped()
    }

    #[test]
    fn the_shipped_directory_has_every_category_the_issue_asks_for() {
        let d = dir();
        assert!(d.services.len() >= 40, "{}", d.services.len());
        let count = |dom: Domain| {
            d.services
                .iter()
                .filter(|s| s.domains.contains(&dom))
                .count()
        };
        assert!(count(Domain::FoodInsecurity) >= 6);
        assert!(count(Domain::TransportationInsecurity) >= 4);
        assert!(count(Domain::UtilityInsecurity) >= 4);
        assert!(count(Domain::MedicalCostBurden) >= 5);
        assert!(count(Domain::LanguageAccess) >= 3);
        assert!(
            d.services
                .iter()
                .filter(|s| s.categories.contains("peer-support"))
                .count()
                >= 6
        );
        assert!(
            d.services
                .iter()
                .filter(|s| s.languages.contains("fr"))
                .count()
                >= 8
        );
        assert!(
            d.services
                .iter()
                .any(|s| s.name.starts_with("Eastside Community Food Pantry"))
        );
    }

    #[test]
    fn chart_facts_come_from_active_coverage_and_age() {
        use crate::coverage::{Code, CoverageFacts, CoverageStatus};
        use time::macros::date;
        let sys = "urn:oid:2.16.840.1.113883.3.221.5";
        let cov = |code: &str, end| CoverageFacts {
            id: "c".into(),
            status: CoverageStatus::Active,
            payer: "p".into(),
            plan: None,
            group: None,
            member_id: None,
            types: vec![Code {
                system: Some(sys.into()),
                code: code.into(),
                display: None,
            }],
            type_label: None,
            start: None,
            end,
            costs: vec![],
        };
        let today = date!(2026 - 11 - 22);
        let f = chart_facts(
            &[cov("121", None), cov("211", Some(date!(2026 - 01 - 01)))],
            sys,
            Some(67),
            today,
        );
        assert_eq!(f, ["age-60-plus", "medicare"].map(String::from).into());
        assert_eq!(
            chart_facts(&[], sys, Some(30), today),
            ["uninsured".to_string()].into()
        );
        assert_eq!(
            medication_term("apixaban 5 MG Oral Tablet").as_deref(),
            Some("apixaban")
        );
        let d = dir();
        let hits = d.search(&Query {
            domain: Some(Domain::MedicalCostBurden),
            medication: medication_term("insulin glargine 100 UNT/ML Pen Injector").as_deref(),
            ..Default::default()
        });
        assert!(
            hits.iter()
                .any(|h| h.service.name.starts_with("Insulin Patient Assistance"))
        );
    }

    #[test]
    fn food_in_spanish_near_the_patient_comes_by_capacity_then_distance() {
        let d = dir();
        let hits = d.search(&Query {
            domain: Some(Domain::FoodInsecurity),
            language: Some("es"),
            near_postal_code: Some("62702"),
            ..Default::default()
        });
        assert!(!hits.is_empty());
        assert!(
            hits.iter()
                .all(|h| h.service.domains.contains(&Domain::FoodInsecurity)
                    && h.service.languages.contains("es"))
        );
        assert!(
            hits.iter().all(|h| h.service.capacity != Capacity::Full),
            "full services are left out"
        );
        for pair in hits.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(a.service.capacity <= b.service.capacity);
            if a.service.capacity == b.service.capacity {
                assert!(a.km.unwrap_or(f64::MAX) <= b.km.unwrap_or(f64::MAX));
            }
        }
        assert!(
            hits.iter().any(|h| h.km.is_some_and(|k| k < 15.0)),
            "distances are from the postal code"
        );
    }

    #[test]
    fn safety_services_publish_no_address_and_peer_support_is_its_own_category() {
        let d = dir();
        let dv = d.search(&Query {
            domain: Some(Domain::IntimatePartnerViolence),
            near_postal_code: Some("62702"),
            include_full: true,
            ..Default::default()
        });
        assert!(!dv.is_empty());
        assert!(
            dv.iter()
                .all(|h| h.service.location.is_none() && h.km.is_none())
        );
        let peers = d.search(&Query {
            peer_support: true,
            include_full: true,
            ..Default::default()
        });
        assert!(peers.len() >= 6);
        assert!(
            peers
                .iter()
                .all(|h| h.service.categories.contains("peer-support"))
        );
    }

    #[test]
    fn eligibility_known_from_the_chart_filters_and_the_rest_is_listed_to_check() {
        let d = dir();
        let any = |facts: &[&str]| {
            d.search(&Query {
                domain: Some(Domain::MedicalCostBurden),
                facts: Some(facts.iter().map(|s| s.to_string()).collect()),
                include_full: true,
                ..Default::default()
            })
        };
        let medicare = any(&["medicare", "age-60-plus"]);
        assert!(
            medicare
                .iter()
                .all(|h| !h.service.required.contains("medicaid")),
            "Medicaid-only services are left out"
        );
        // A service of this domain whose judged requirements are exactly Medicaid.
        let medicaid_only = d.services.iter().any(|s| {
            s.domains.contains(&Domain::MedicalCostBurden)
                && s.required
                    .iter()
                    .filter(|f| JUDGED_FACTS.contains(&f.as_str()))
                    .eq(["medicaid".to_string()].iter())
        });
        if medicaid_only {
            assert!(
                any(&["medicaid"])
                    .iter()
                    .any(|h| h.service.required.contains("medicaid"))
            );
        }
        // Nothing known: nothing filtered on eligibility.
        let unknown = d.search(&Query {
            domain: Some(Domain::MedicalCostBurden),
            include_full: true,
            ..Default::default()
        });
        assert!(unknown.len() >= medicare.len());
        assert!(
            medicare.iter().any(|h| !h.to_check.is_empty()),
            "income requirements cannot be judged: to check"
        );
    }

    #[test]
    fn medicine_cost_help_for_a_given_drug() {
        let d = dir();
        let insulin = d.search(&Query {
            domain: Some(Domain::MedicalCostBurden),
            medication: Some("insulin"),
            include_full: true,
            ..Default::default()
        });
        assert!(!insulin.is_empty());
        assert!(insulin.iter().all(|h| {
            h.service
                .medications
                .iter()
                .any(|m| m.starts_with("insulin"))
        }));
        assert!(
            d.search(&Query {
                medication: Some("no-such-drug"),
                ..Default::default()
            })
            .is_empty()
        );
    }

    #[test]
    fn a_bad_directory_is_refused_clearly() {
        assert!(
            Directory::parse("{}")
                .unwrap_err()
                .starts_with("the directory is not HSDS 3 JSON")
        );
        let bad = r#"{"services":[{"id":"x","name":"n","status":"active","attributes":[{"taxonomy_term":{"code":"hunger","taxonomy":"sdohcc-domain"}}]}]}"#;
        assert_eq!(
            Directory::parse(bad).unwrap_err(),
            "unknown domain \"hunger\""
        );
    }
}
