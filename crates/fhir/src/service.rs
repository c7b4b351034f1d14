//! A directory service as FHIR resources on the EHR's server, so that a
//! referral names its performer by a reference the server resolves and a
//! community organisation finds its work with `Task?owner=Organization/<id>`.
//!
//! Each service used is written, inside the referral's own transaction, as
//! an SDOHCC HealthcareService (STU 2.3.0), the Organization that provides
//! it and, where the directory publishes an address, an SDOHCC Location;
//! each is created with `ifNoneExist` on its Open Referral HSDS 3 id as
//! identifier, so the first referral to a service creates them and every
//! later one reuses them (FHIR R4 http.html#cond-update, transaction
//! processing of `ifNoneExist`), and the referral's other entries point to
//! them by `urn:uuid` (resolved by the server to whichever resource matched).
//!
//! What the directory knows is copied as it was when the resources were
//! first created: SDOHCC HealthcareService marks `availableTime`,
//! `availabilityExceptions`, `communication` and `telecom` must-support;
//! STU 2.3.0 has no element for capacity, so whether the service takes new
//! people goes, in words, into `availabilityExceptions` (the capacity-status
//! extension of later SDOHCC ballots is not part of 2.3.0).

use serde_json::{Value, json};

use super::bundle::urn;
use super::profiles::{
    SDOHCC_HEALTHCARE_SERVICE, SDOHCC_LOCATION, SDOHCC_TELECOM_APPOINTMENT, US_CORE_ORGANIZATION,
    claim,
};
use crate::domain::directory::{Capacity, Service};
use crate::domain::sdoh::SDOHCC_TEMPORARY_CODES;

/// Identifier system of HSDS services (the HealthcareService's identifier).
pub const HSDS_SERVICE_SYSTEM: &str = "http://passerelle.example.org/fhir/sid/hsds-service";
/// Identifier system of HSDS organizations (the Organization's identifier).
pub const HSDS_ORGANIZATION_SYSTEM: &str =
    "http://passerelle.example.org/fhir/sid/hsds-organization";
/// Identifier system of HSDS locations (the Location's identifier).
pub const HSDS_LOCATION_SYSTEM: &str = "http://passerelle.example.org/fhir/sid/hsds-location";

/// The transaction entries materialising one service, and the references
/// the referral uses.
#[derive(Debug, Clone)]
pub struct Materialised {
    /// HealthcareService, Organization and (if any) Location entries.
    pub entries: Vec<Value>,
    /// `{reference: urn, display}` of the HealthcareService.
    pub service: Value,
    /// `{reference: urn, display}` of the Organization.
    pub organization: Value,
}

/// A conditional create keyed on `system|value`, its `urn:uuid` derived
/// from both (so an HSDS id never collides with a referral's own ids).
fn keyed(system: &str, value: &str, mut resource: Value) -> (String, Value) {
    let full_url = urn(&format!("{system}|{value}"));
    resource["identifier"] = json!([{ "system": system, "value": value }]);
    let rtype = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let entry = json!({
        "fullUrl": full_url,
        "resource": resource,
        "request": { "method": "POST", "url": rtype, "ifNoneExist": format!("identifier={system}|{value}") }
    });
    (full_url, entry)
}

/// HSDS weekly BYDAY codes → FHIR `daysOfWeek` codes.
fn day_code(byday: &str) -> Option<&'static str> {
    Some(match byday {
        "MO" => "mon",
        "TU" => "tue",
        "WE" => "wed",
        "TH" => "thu",
        "FR" => "fri",
        "SA" => "sat",
        "SU" => "sun",
        _ => return None,
    })
}

/// `HH:MM` → FHIR `time` (`HH:MM:SS`), when it is one.
fn fhir_time(t: &str) -> Option<String> {
    let (h, m) = t.trim().split_once(':')?;
    let (h, m): (u8, u8) = (h.parse().ok()?, m.get(..2)?.parse().ok()?);
    (h < 24 && m < 60).then(|| format!("{h:02}:{m:02}:00"))
}

/// Whether the service takes new people, in words (for
/// `availabilityExceptions`).
pub fn capacity_words(service: &Service) -> &'static str {
    match service.capacity {
        Capacity::Accepting => "Taking new people",
        Capacity::Waitlist => "Waiting list",
        Capacity::Full => "Full: not taking new people",
        Capacity::Unknown => "Capacity unknown",
    }
}

/// The entries that make `service` resolvable on the server.
pub fn materialise(service: &Service) -> Materialised {
    let org_key = service
        .provider
        .id
        .clone()
        .unwrap_or_else(|| service.id.clone());
    let org_name = if service.organization.is_empty() {
        service.name.clone()
    } else {
        service.organization.clone()
    };
    let mut org = json!({ "resourceType": "Organization", "active": true, "name": org_name });
    let org_telecom: Vec<Value> = [
        service
            .provider
            .email
            .as_ref()
            .map(|e| json!({ "system": "email", "value": e, "use": "work" })),
        service
            .provider
            .website
            .as_ref()
            .map(|w| json!({ "system": "url", "value": w, "use": "work" })),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !org_telecom.is_empty() {
        org["telecom"] = json!(org_telecom);
    }
    claim(&mut org, US_CORE_ORGANIZATION);
    let (org_urn, org_entry) = keyed(HSDS_ORGANIZATION_SYSTEM, &org_key, org);
    let organization = json!({ "reference": org_urn, "display": org_name });
    let mut entries = Vec::new();

    let mut hcs = json!({
        "resourceType": "HealthcareService",
        "active": true,
        "providedBy": organization,
        "name": service.name,
    });
    let categories: Vec<Value> = service
        .domains
        .iter()
        .map(|d| json!({ "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": d.code(), "display": d.label() }] }))
        .collect();
    if !categories.is_empty() {
        hcs["category"] = json!(categories);
    }
    if !service.description.is_empty() {
        hcs["extraDetails"] = json!(service.description);
    }
    if !service.eligibility.is_empty() {
        hcs["eligibility"] = json!([{ "comment": service.eligibility }]);
    }
    // SDOHCC HealthcareService, slice telecom[AppointmentContact] (1..*):
    // the phone a patient uses to make an appointment, or the e-mail when
    // the directory has no phone, flagged by the
    // SDOHCC-ExtensionHealthcareServiceTelecomAppointment extension.
    let appointment = json!([{ "url": SDOHCC_TELECOM_APPOINTMENT, "valueBoolean": true }]);
    let mut telecom: Vec<Value> = [
        service
            .phone
            .as_ref()
            .map(|p| json!({ "system": "phone", "value": p, "use": "work" })),
        service
            .email
            .as_ref()
            .map(|e| json!({ "system": "email", "value": e, "use": "work" })),
        service
            .url
            .as_ref()
            .map(|u| json!({ "system": "url", "value": u, "use": "work" })),
    ]
    .into_iter()
    .flatten()
    .collect();
    let bookable = telecom
        .first_mut()
        .filter(|t| t["system"] == "phone" || t["system"] == "email");
    let profiled = bookable.is_some();
    if let Some(t) = bookable {
        t["extension"] = appointment;
    }
    if !telecom.is_empty() {
        hcs["telecom"] = json!(telecom);
    }
    // A service the directory gives no phone or e-mail for cannot meet the
    // profile's AppointmentContact slice, so it claims none (it stays a
    // valid R4 HealthcareService).
    if profiled {
        claim(&mut hcs, SDOHCC_HEALTHCARE_SERVICE);
    }
    if !service.languages.is_empty() {
        hcs["communication"] = json!(
            service
                .languages
                .iter()
                .map(|l| json!({ "coding": [{ "system": "urn:ietf:bcp:47", "code": l }] }))
                .collect::<Vec<_>>()
        );
    }
    let hours: Vec<Value> = service
        .hours
        .iter()
        .filter_map(|h| {
            let days: Vec<&str> = h.days.iter().filter_map(|d| day_code(d)).collect();
            let mut t = json!({});
            if !days.is_empty() {
                t["daysOfWeek"] = json!(days);
            }
            if let Some(o) = h.opens.as_deref().and_then(fhir_time) {
                t["availableStartTime"] = json!(o);
            }
            if let Some(c) = h.closes.as_deref().and_then(fhir_time) {
                t["availableEndTime"] = json!(c);
            }
            (t != json!({})).then_some(t)
        })
        .collect();
    if !hours.is_empty() {
        hcs["availableTime"] = json!(hours);
    }
    let exceptions = match service.capacity_note.as_deref().filter(|n| !n.is_empty()) {
        Some(note) => format!("{}: {note}", capacity_words(service)),
        None => capacity_words(service).to_string(),
    };
    hcs["availabilityExceptions"] = json!(exceptions);
    if let Some(place) = &service.place {
        let mut address = json!({ "use": "work", "type": "physical" });
        if !place.lines.is_empty() {
            address["line"] = json!(place.lines);
        }
        for (key, value) in [
            ("city", &place.city),
            ("state", &place.state),
            ("postalCode", &place.postal_code),
            ("country", &place.country),
        ] {
            if let Some(v) = value {
                address[key] = json!(v);
            }
        }
        let mut location = json!({
            "resourceType": "Location",
            "status": "active",
            "name": place.name.clone().unwrap_or_else(|| service.name.clone()),
            "address": address,
            "managingOrganization": { "reference": org_urn },
        });
        if let Some((lat, lon)) = service.location {
            location["position"] = json!({ "latitude": lat, "longitude": lon });
        }
        claim(&mut location, SDOHCC_LOCATION);
        let (loc_urn, loc_entry) = keyed(HSDS_LOCATION_SYSTEM, &place.id, location);
        hcs["location"] = json!([{ "reference": loc_urn }]);
        entries.push(loc_entry);
    }
    let (hcs_urn, hcs_entry) = keyed(HSDS_SERVICE_SYSTEM, &service.id, hcs);
    entries.insert(0, org_entry);
    entries.insert(0, hcs_entry);
    Materialised {
        entries,
        service: json!({ "reference": hcs_urn, "display": service.name }),
        organization,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::directory::Directory;

    fn pantry(d: &Directory) -> Service {
        d.services
            .iter()
            .find(|s| s.slug == "eastside-food-pantry")
            .expect("the shipped directory has the Eastside pantry")
            .clone()
    }

    #[test]
    fn a_service_becomes_a_healthcare_service_its_organization_and_location() {
        let d = Directory::shipped();
        let pantry = pantry(&d);
        let m = materialise(&pantry);
        let types: Vec<&str> = m
            .entries
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["HealthcareService", "Organization", "Location"]);
        let hcs = &m.entries[0]["resource"];
        assert_eq!(hcs["identifier"][0]["value"], pantry.id);
        assert_eq!(
            m.entries[0]["request"]["ifNoneExist"],
            format!("identifier={HSDS_SERVICE_SYSTEM}|{}", pantry.id)
        );
        assert_eq!(hcs["active"], true);
        assert_eq!(hcs["providedBy"]["reference"], m.entries[1]["fullUrl"]);
        assert_eq!(hcs["location"][0]["reference"], m.entries[2]["fullUrl"]);
        assert_eq!(m.service["reference"], m.entries[0]["fullUrl"]);
        assert_eq!(m.organization["reference"], m.entries[1]["fullUrl"]);
        assert_eq!(
            m.entries[1]["resource"]["identifier"][0]["value"],
            pantry.provider.id.clone().unwrap()
        );
        assert_eq!(hcs["telecom"][0]["extension"][0]["valueBoolean"], true);
        assert_eq!(hcs["availableTime"][0]["daysOfWeek"], json!(["tue", "thu"]));
        assert_eq!(hcs["availableTime"][0]["availableStartTime"], "10:00:00");
        assert!(
            hcs["availabilityExceptions"]
                .as_str()
                .unwrap()
                .starts_with("Taking new people"),
            "{hcs}"
        );
        let loc = &m.entries[2]["resource"];
        assert_eq!(loc["address"]["line"][0], "1400 Ambergate Road");
        assert_eq!(loc["address"]["postalCode"], "62703");
        let v = crate::SchemaValidator::load(&crate::test_definitions_dir())
            .expect("the FHIR schema is installed by ./scripts/test");
        for e in &m.entries {
            v.validate(&e["resource"]).unwrap();
        }
    }

    #[test]
    fn a_service_without_an_address_has_no_location_and_the_same_service_the_same_urns() {
        let d = Directory::shipped();
        let hidden = d
            .services
            .iter()
            .find(|s| s.place.is_none())
            .expect("safety services publish no address");
        let m = materialise(hidden);
        assert_eq!(m.entries.len(), 2);
        assert!(m.entries[0]["resource"].get("location").is_none());
        assert_eq!(materialise(hidden).entries, m.entries);
        assert_eq!(fhir_time("9:05"), Some("09:05:00".into()));
        assert_eq!(fhir_time("25:00"), None);
    }

    #[test]
    fn each_resource_claims_its_profile_and_a_service_no_one_can_book_claims_none() {
        let d = Directory::shipped();
        let pantry = pantry(&d);
        let m = materialise(&pantry);
        let claimed: Vec<&Value> = m
            .entries
            .iter()
            .map(|e| &e["resource"]["meta"]["profile"][0])
            .collect();
        assert_eq!(
            claimed,
            [
                SDOHCC_HEALTHCARE_SERVICE,
                US_CORE_ORGANIZATION,
                SDOHCC_LOCATION
            ]
        );
        // No phone: the e-mail is how an appointment is made.
        let mut by_mail = pantry.clone();
        by_mail.phone = None;
        let hcs = materialise(&by_mail).entries[0]["resource"].clone();
        assert_eq!(hcs["telecom"][0]["system"], "email");
        assert_eq!(
            hcs["telecom"][0]["extension"][0]["url"],
            SDOHCC_TELECOM_APPOINTMENT
        );
        assert_eq!(hcs["meta"]["profile"][0], SDOHCC_HEALTHCARE_SERVICE);
        // Neither: no AppointmentContact, so no SDOHCC claim.
        let mut web_only = by_mail;
        web_only.email = None;
        let hcs = materialise(&web_only).entries[0]["resource"].clone();
        assert!(hcs.get("meta").is_none(), "{hcs}");
        assert!(hcs["telecom"][0].get("extension").is_none());
    }
}
