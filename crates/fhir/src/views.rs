//! Typed views: from fhir-sdk's R4B models to the plain values of
//! [`crate::domain`]. This is where FHIR's shapes (lists of optional
//! elements, choice types, partial dates) are flattened into what a page shows.

use fhir_sdk::r4b::resources::{ClaimResponse, Coverage, Encounter, Patient, ServiceRequest, Task};
use fhir_sdk::r4b::types::{CodeableConcept, ExtensionValue, HumanName, Reference};
use time::{Date, Month};

use crate::domain::coverage::{Code, CoverageFacts, CoverageStatus};
use crate::domain::visit::{
    Denial, EncounterSummary, Identifier, Language, PatientSummary, Referral, TaskSummary,
    task_kind,
};

/// `http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired`
pub const INTERPRETER_REQUIRED: &str =
    "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired";

/// A FHIR date at its best precision; a partial date counts as its first day.
pub fn to_date(d: &fhir_sdk::Date) -> Option<Date> {
    match d {
        fhir_sdk::Date::Year(y) => Date::from_calendar_date(*y, Month::January, 1).ok(),
        fhir_sdk::Date::YearMonth(y, m) => Date::from_calendar_date(*y, *m, 1).ok(),
        fhir_sdk::Date::Date(d) => Some(*d),
    }
}

/// The calendar day of a FHIR dateTime (in its own offset).
pub fn to_day(dt: &fhir_sdk::DateTime) -> Option<Date> {
    match dt {
        fhir_sdk::DateTime::Date(d) => to_date(d),
        fhir_sdk::DateTime::DateTime(instant) => Some(instant.0.date()),
    }
}

fn codes(cc: &CodeableConcept) -> Vec<Code> {
    cc.coding
        .iter()
        .flatten()
        .filter_map(|c| {
            Some(Code {
                system: c.system.clone(),
                code: c.code.clone()?,
                display: c.display.clone(),
            })
        })
        .collect()
}

/// The words for a concept: its text, else the first coding's display, else its code.
pub fn concept_text(cc: &CodeableConcept) -> Option<String> {
    cc.text.clone().or_else(|| {
        cc.coding
            .iter()
            .flatten()
            .find_map(|c| c.display.clone().or_else(|| c.code.clone()))
    })
}

fn reference_text(r: &Reference) -> Option<String> {
    r.display.clone().or_else(|| r.reference.clone())
}

fn human_name(n: &HumanName) -> Option<String> {
    if let Some(text) = &n.text {
        return Some(text.clone());
    }
    let given: Vec<&str> = n.given.iter().flatten().map(String::as_str).collect();
    let full = [given.join(" "), n.family.clone().unwrap_or_default()]
        .join(" ")
        .trim()
        .to_string();
    (!full.is_empty()).then_some(full)
}

pub fn patient(p: &Patient) -> PatientSummary {
    use fhir_sdk::r4b::codes::NameUse;
    let names: Vec<&HumanName> = p.name.iter().flatten().collect();
    let name = names
        .iter()
        .find(|n| matches!(n.r#use, Some(NameUse::Official) | Some(NameUse::Usual)))
        .or(names.first())
        .and_then(|n| human_name(n))
        .unwrap_or_else(|| "(no name recorded)".to_string());
    let identifiers = p
        .identifier
        .iter()
        .flatten()
        .filter_map(|i| {
            let value = i.value.clone()?;
            let label = i
                .r#type
                .as_ref()
                .and_then(|t| {
                    t.text
                        .clone()
                        .or_else(|| t.coding.iter().flatten().find_map(|c| c.code.clone()))
                })
                .or_else(|| i.system.clone())
                .unwrap_or_else(|| "ID".into());
            Some(Identifier { label, value })
        })
        .collect();
    let comms: Vec<_> = p.communication.iter().flatten().collect();
    let language = comms
        .iter()
        .find(|c| c.preferred == Some(true))
        .or(comms.first())
        .and_then(|c| {
            let code = c
                .language
                .coding
                .iter()
                .flatten()
                .find_map(|cd| cd.code.clone())?;
            let display = concept_text(&c.language).unwrap_or_else(|| code.clone());
            Some(Language { code, display })
        });
    let interpreter_needed = p
        .extension
        .iter()
        .find(|e| e.url == INTERPRETER_REQUIRED)
        .and_then(|e| match &e.value {
            Some(ExtensionValue::Boolean(b)) => Some(*b),
            _ => None,
        });
    PatientSummary {
        id: p.id.clone().unwrap_or_default(),
        name,
        birth_date: p.birth_date.as_ref().and_then(to_date),
        gender: p.gender.as_ref().map(|g| g.as_ref().to_string()),
        identifiers,
        language,
        interpreter_needed,
        postal_code: p
            .address
            .iter()
            .flatten()
            .find_map(|a| a.postal_code.clone()),
    }
}

pub fn encounter(e: &Encounter) -> EncounterSummary {
    EncounterSummary {
        id: e.id.clone().unwrap_or_default(),
        status: e.status.as_ref().to_string(),
        class: e.class.display.clone().or_else(|| e.class.code.clone()),
        types: e.r#type.iter().flatten().filter_map(concept_text).collect(),
        start: e
            .period
            .as_ref()
            .and_then(|p| p.start.as_ref())
            .and_then(to_day),
        end: e
            .period
            .as_ref()
            .and_then(|p| p.end.as_ref())
            .and_then(to_day),
    }
}

/// `payer_name` resolves a payor reference to a name (from `_include`d Organizations).
pub fn coverage(c: &Coverage, payer_name: impl Fn(&Reference) -> Option<String>) -> CoverageFacts {
    let status = match c.status.as_str() {
        "active" => CoverageStatus::Active,
        "cancelled" => CoverageStatus::Cancelled,
        "draft" => CoverageStatus::Draft,
        _ => CoverageStatus::EnteredInError,
    };
    let class_value = |kind: &str| {
        c.class
            .iter()
            .flatten()
            .find(|cl| {
                cl.r#type
                    .coding
                    .iter()
                    .flatten()
                    .any(|cd| cd.code.as_deref() == Some(kind))
            })
            .map(|cl| match &cl.name {
                Some(name) => format!("{name} ({})", cl.value),
                None => cl.value.clone(),
            })
    };
    let payer = c
        .payor
        .iter()
        .flatten()
        .filter_map(|r| payer_name(r).or_else(|| reference_text(r)))
        .collect::<Vec<_>>()
        .join(", ");
    let costs = c
        .cost_to_beneficiary
        .iter()
        .flatten()
        .map(|cost| {
            use fhir_sdk::r4b::resources::CoverageCostToBeneficiaryValue as V;
            let label = cost
                .r#type
                .as_ref()
                .and_then(concept_text)
                .unwrap_or_else(|| "Cost".into());
            let amount = match &cost.value {
                V::Money(m) => format!(
                    "{} {}",
                    m.value.map(|v| format!("{v:.2}")).unwrap_or_default(),
                    m.currency.clone().unwrap_or_default()
                ),
                V::Quantity(q) => format!(
                    "{}{}",
                    q.value.map(|v| v.to_string()).unwrap_or_default(),
                    q.unit.as_ref().map(|u| format!(" {u}")).unwrap_or_default()
                ),
            };
            format!("{label}: {}", amount.trim())
        })
        .collect();
    CoverageFacts {
        id: c.id.clone().unwrap_or_default(),
        status,
        payer: if payer.is_empty() {
            "(payer not recorded)".into()
        } else {
            payer
        },
        plan: class_value("plan"),
        group: class_value("group"),
        member_id: c
            .subscriber_id
            .clone()
            .or_else(|| c.identifier.iter().flatten().find_map(|i| i.value.clone())),
        types: c.r#type.as_ref().map(codes).unwrap_or_default(),
        type_label: c.r#type.as_ref().and_then(concept_text),
        start: c
            .period
            .as_ref()
            .and_then(|p| p.start.as_ref())
            .and_then(to_day),
        end: c
            .period
            .as_ref()
            .and_then(|p| p.end.as_ref())
            .and_then(to_day),
        costs,
    }
}

pub fn task(t: &Task, patient_ref: &str) -> TaskSummary {
    let code = t
        .code
        .as_ref()
        .map(codes)
        .and_then(|c| c.into_iter().next());
    let focus = t.focus.as_ref().and_then(|f| f.reference.clone());
    let focus_type = focus.as_deref().and_then(|f| f.split('/').next());
    let owner_is_patient =
        t.owner.as_ref().and_then(|o| o.reference.as_deref()) == Some(patient_ref);
    TaskSummary {
        id: t.id.clone().unwrap_or_default(),
        kind: task_kind(code.as_ref(), focus_type, owner_is_patient),
        status: t.status.as_ref().to_string(),
        description: t
            .description
            .clone()
            .or_else(|| t.code.as_ref().and_then(concept_text))
            .unwrap_or_else(|| "(no description)".into()),
        focus,
        owner: t.owner.as_ref().and_then(reference_text),
        priority: t.priority.as_ref().map(|p| p.as_ref().to_string()),
        authored: t.authored_on.as_ref().and_then(to_day),
        due: t
            .restriction
            .as_ref()
            .and_then(|r| r.period.as_ref())
            .and_then(|p| p.end.as_ref())
            .and_then(to_day),
        // Filled from the Task's JSON by [`crate::task::report`].
        report: Default::default(),
    }
}

pub fn referral(s: &ServiceRequest) -> Referral {
    Referral {
        service_request_id: s.id.clone().unwrap_or_default(),
        text: s
            .code
            .as_ref()
            .and_then(concept_text)
            .unwrap_or_else(|| "(no description)".into()),
        status: s.status.as_ref().to_string(),
        performer: s.performer.iter().flatten().find_map(reference_text),
        authored: s.authored_on.as_ref().and_then(to_day),
        task: None,
    }
}

/// A ClaimResponse as a denial, when it denies anything: outcome `error`, or
/// an error or the adjudication of an unpaid item carrying a reason (a
/// reason on a paid item, such as a contractual adjustment, is no denial).
/// `service` names what was denied, from the `_include`d Claim when the
/// server sent it.
pub fn denial(
    c: &ClaimResponse,
    payer_name: impl Fn(&Reference) -> Option<String>,
    service: Option<String>,
) -> Option<Denial> {
    let mut reasons: Vec<Code> = c
        .item
        .iter()
        .flatten()
        .filter(|i| {
            !i.adjudication.iter().flatten().any(|a| {
                a.category
                    .coding
                    .iter()
                    .flatten()
                    .any(|k| k.code.as_deref() == Some("benefit"))
                    && a.amount
                        .as_ref()
                        .and_then(|m| m.value)
                        .is_some_and(|v| v > 0.0)
            })
        })
        .flat_map(|i| i.adjudication.iter().flatten())
        .filter_map(|a| a.reason.as_ref())
        .flat_map(codes)
        .collect();
    reasons.extend(c.error.iter().flatten().flat_map(|e| codes(&e.code)));
    let outcome = c.outcome.as_ref().to_string();
    if reasons.is_empty() && outcome != "error" {
        return None;
    }
    let disposition = c.disposition.clone().or_else(|| {
        c.process_note
            .iter()
            .flatten()
            .map(|n| n.text.clone())
            .next()
    });
    Some(Denial {
        id: c.id.clone().unwrap_or_default(),
        created: to_day(&c.created),
        payer: payer_name(&c.insurer)
            .or_else(|| reference_text(&c.insurer))
            .unwrap_or_default(),
        use_: c.r#use.as_ref().to_string(),
        outcome,
        service,
        reasons,
        disposition,
    })
}

// ---- FHIR JSON read without decoding (paged readers, builders' inputs)

/// The day of a FHIR `date`, `dateTime` or `instant` given as JSON.
pub fn json_date(v: &serde_json::Value) -> Option<Date> {
    crate::domain::iso_date(v.as_str()?.get(..10)?)
}

/// The official (else first) name: its text, else prefix, given and family.
pub fn json_human_name(resource: &serde_json::Value) -> Option<String> {
    let names = resource.get("name")?.as_array()?;
    let name = names
        .iter()
        .find(|n| n.get("use").and_then(serde_json::Value::as_str) == Some("official"))
        .or_else(|| names.first())?;
    if let Some(text) = name.get("text").and_then(serde_json::Value::as_str)
        && !text.trim().is_empty()
    {
        return Some(text.trim().to_string());
    }
    let strings = |key: &str| -> Vec<String> {
        name.get(key)
            .and_then(serde_json::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(serde_json::Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut parts = strings("prefix");
    parts.extend(strings("given"));
    if let Some(family) = name.get("family").and_then(serde_json::Value::as_str) {
        parts.push(family.to_string());
    }
    let joined = parts.join(" ");
    (!joined.trim().is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_response(items: serde_json::Value) -> ClaimResponse {
        serde_json::from_value(serde_json::json!({
            "resourceType": "ClaimResponse", "id": "cr1", "status": "active",
            "type": { "coding": [{ "code": "pharmacy" }] }, "use": "claim",
            "patient": { "reference": "Patient/p1" }, "created": "2026-10-01",
            "insurer": { "display": "Sunrise" }, "outcome": "complete",
            "item": items
        }))
        .unwrap()
    }

    #[test]
    fn a_reason_on_a_paid_item_is_no_denial() {
        let reason = |code: &str| serde_json::json!({ "coding": [{ "system": "https://x12.org/codes/claim-adjustment-reason-codes", "code": code }] });
        // Paid, with a contractual adjustment (CARC 45): not a denial.
        let paid = claim_response(serde_json::json!([{ "itemSequence": 1, "adjudication": [
            { "category": { "coding": [{ "code": "benefit" }] }, "amount": { "value": 80.0, "currency": "USD" } },
            { "category": { "coding": [{ "code": "submitted" }] }, "reason": reason("45") }
        ] }]));
        assert!(denial(&paid, |_| None, None).is_none());
        // Unpaid (no benefit, or a benefit of 0) with a reason: a denial.
        let denied = claim_response(serde_json::json!([
            { "itemSequence": 1, "adjudication": [
                { "category": { "coding": [{ "code": "benefit" }] }, "amount": { "value": 0.0, "currency": "USD" } },
                { "category": { "coding": [{ "code": "submitted" }] }, "reason": reason("50") }
            ] },
            { "itemSequence": 2, "adjudication": [
                { "category": { "coding": [{ "code": "benefit" }] }, "amount": { "value": 20.0, "currency": "USD" } },
                { "category": { "coding": [{ "code": "submitted" }] }, "reason": reason("45") }
            ] }
        ]));
        let d = denial(&denied, |_| None, None).unwrap();
        let codes: Vec<&str> = d.reasons.iter().map(|c| c.code.as_str()).collect();
        assert_eq!(codes, ["50"], "only the unpaid item's reason");
    }
}
